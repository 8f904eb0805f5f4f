//! Diagnostics: what is wrong, where, and how to fix it.
//!
//! A [`Diagnostic`] carries a stable [`Code`] (`edgefn::manifest::...`), a severity, labelled
//! spans into its [`Source`], and a help line. It implements [`miette::Diagnostic`], so the CLI
//! renders it like a compiler error; [`Diagnostic::location`] gives the file, line and column for
//! machine-readable output.

use std::fmt;

use crate::source::{Source, Span};

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// The stable code of a diagnostic. Codes are part of edgefn's interface: scripts and
        /// documentation refer to them, so a code is never renamed or reused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as users see it, e.g. `edgefn::manifest::unknown_key`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    /// The file is not valid YAML.
    YamlSyntax => "edgefn::manifest::yaml_syntax",
    /// The same key appears twice in one mapping.
    DuplicateKey => "edgefn::manifest::duplicate_key",
    /// A key that the format does not know.
    UnknownKey => "edgefn::manifest::unknown_key",
    /// A required key is absent.
    MissingKey => "edgefn::manifest::missing_key",
    /// A value of the wrong YAML type (a list where a mapping is expected, ...).
    WrongType => "edgefn::manifest::wrong_type",
    /// A value outside a fixed set of choices.
    InvalidValue => "edgefn::manifest::invalid_value",
    /// `apiVersion` is not one this edgefn understands.
    ApiVersion => "edgefn::manifest::api_version",
    /// A function, device or binding name that is not a valid identifier.
    InvalidName => "edgefn::manifest::invalid_name",
    /// Two things of one kind share a name.
    DuplicateName => "edgefn::manifest::duplicate_name",
    /// A binding refers to a function that is not defined.
    UnknownFunction => "edgefn::manifest::unknown_function",
    /// A selector names a device that is not defined.
    UnknownDevice => "edgefn::manifest::unknown_device",
    /// A device selector that matches no device (a warning).
    SelectorMatchesNothing => "edgefn::manifest::selector_matches_nothing",
    /// A device selector that is neither by names nor by labels, or both.
    InvalidSelector => "edgefn::manifest::invalid_selector",
    /// An MQTT topic or topic filter that is not valid.
    InvalidTopic => "edgefn::manifest::invalid_topic",
    /// A wildcard (`+`, `#`) where a concrete topic is needed.
    WildcardNotAllowed => "edgefn::manifest::wildcard_not_allowed",
    /// A quantity (memory, cpu, duration) that cannot be parsed.
    InvalidQuantity => "edgefn::manifest::invalid_quantity",
    /// A quantity or number outside its allowed range.
    OutOfRange => "edgefn::manifest::out_of_range",
    /// A continuous binding that also lists triggers.
    ContinuousWithTriggers => "edgefn::manifest::continuous_with_triggers",
    /// A triggered binding without any trigger.
    TriggeredWithoutTriggers => "edgefn::manifest::triggered_without_triggers",
    /// A function path that does not exist.
    PathMissing => "edgefn::manifest::path_missing",
    /// A function path that leaves the project folder.
    PathOutsideProject => "edgefn::manifest::path_outside_project",
    /// A handler that is not of the form its runtime expects.
    InvalidHandler => "edgefn::manifest::invalid_handler",
    /// A handler whose file does not exist in the function folder.
    HandlerMissing => "edgefn::manifest::handler_missing",
    /// A route whose direction and source do not agree.
    InvalidRoute => "edgefn::manifest::invalid_route",
    /// A function that no binding runs (a warning).
    UnusedFunction => "edgefn::manifest::unused_function",
    /// A test case file that is not valid.
    InvalidTestCase => "edgefn::manifest::invalid_test_case",
    /// Aliases that would expand the document past its budget (an "alias bomb").
    AliasExpansion => "edgefn::manifest::alias_expansion",
    /// Collections nested deeper than [`crate::yaml::MAX_DEPTH`].
    NestingDepth => "edgefn::manifest::nesting_depth",
    /// A file that is not UTF-8 text.
    NotUtf8 => "edgefn::manifest::not_utf8",
    /// A `${device.…}` placeholder in `env` that is not closed or names no known field.
    InvalidPlaceholder => "edgefn::manifest::invalid_placeholder",
    /// A `${device.labels.KEY}` or `${device.vars.KEY}` that a device running it does not have.
    UndefinedDeviceValue => "edgefn::manifest::undefined_device_value",
    /// A `rollout:` that cannot run: stages that select nothing or go down, an unknown label,
    /// no devices to roll out to.
    InvalidRollout => "edgefn::manifest::invalid_rollout",
    /// A device node (`deviceNodes`) that is not an absolute path under `/dev/`, or has `.` or
    /// `..` components.
    InvalidDeviceNode => "edgefn::manifest::invalid_device_node",
    /// A function or binding names a model that `models:` does not define.
    UnknownModel => "edgefn::manifest::unknown_model",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a diagnostic is: errors stop an apply, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look; does not fail validation.
    Warning,
    /// The manifest cannot be used as it is.
    Error,
}

/// A span with the text shown under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to say there.
    pub text: String,
}

/// One problem found in a source file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// One line saying what is wrong.
    pub message: String,
    /// Labelled spans; the first is the primary location.
    pub labels: Vec<Label>,
    /// How to fix it.
    pub help: Option<String>,
    source: Source,
}

/// Where a diagnostic points, for machine-readable output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name as given to [`Source::new`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Diagnostic {
    /// An error with `code` at `span`.
    pub fn error(source: &Source, code: Code, span: Span, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: Severity::Error,
            message: message.into(),
            labels: vec![Label {
                span,
                text: String::new(),
            }],
            help: None,
            source: source.clone(),
        }
    }

    /// A warning with `code` at `span`.
    pub fn warning(source: &Source, code: Code, span: Span, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(source, code, span, message)
        }
    }

    /// Sets the text of the primary label.
    pub fn label(mut self, text: impl Into<String>) -> Self {
        if let Some(primary) = self.labels.first_mut() {
            primary.text = text.into();
        }
        self
    }

    /// Adds a secondary label.
    pub fn with_label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The source this diagnostic points into.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// File, line and column of the primary label.
    pub fn location(&self) -> Location {
        let offset = self.labels.first().map_or(0, |l| l.span.offset);
        let (line, column) = self.source.line_col(offset);
        Location {
            file: self.source.name().to_owned(),
            line,
            column,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Warning => miette::Severity::Warning,
            Severity::Error => miette::Severity::Error,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(self.source.code())
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().enumerate().map(|(i, l)| {
            let text = (!l.text.is_empty()).then(|| l.text.clone());
            if i == 0 {
                miette::LabeledSpan::new_primary_with_span(text, l.span)
            } else {
                miette::LabeledSpan::new_with_span(text, l.span)
            }
        })))
    }
}

/// The diagnostics of one run, errors and warnings, in the order they were found.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// True when any is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.0.len() - self.error_count()
    }

    /// Sorts by file, then position, keeping the order of diagnostics at the same place.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            let pa = a.labels.first().map_or(0, |l| l.span.offset);
            let pb = b.labels.first().map_or(0, |l| l.span.offset);
            a.source.name().cmp(b.source.name()).then(pa.cmp(&pb))
        });
    }

    /// Iterates over them.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<T: IntoIterator<Item = Diagnostic>>(&mut self, iter: T) {
        self.0.extend(iter);
    }
}

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo
/// (Jaro-Winkler similarity above 0.8, ignoring case).
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
