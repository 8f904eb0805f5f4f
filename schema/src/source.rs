//! Source text with a name, and byte spans into it.
//!
//! Every diagnostic points into a [`Source`]; spans are byte offsets so that they can be handed
//! to miette as they are, and [`Source::line_col`] turns them into the 1-based line and column a
//! user reads. [`Source::from_utf8`] is how outside bytes become text: a file that is not UTF-8
//! gets a diagnostic at its first bad byte, like any other problem.

use std::sync::Arc;

use crate::diagnostic::{Code, Diagnostic};

/// A named piece of text (a manifest, a test case) that diagnostics point into.
#[derive(Debug, Clone)]
pub struct Source {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    text: String,
    /// Byte offset of each line's start (after each `\n`), so that finding a line costs a
    /// binary search, not a scan: a file may have a diagnostic on each of its lines.
    line_starts: Vec<usize>,
    /// Whether the text has a `\r` not followed by `\n`, which miette counts as a line break.
    lone_cr: bool,
}

impl Source {
    /// Wraps `text`, read from the file called `name` (shown to users as it is).
    pub fn new(name: impl AsRef<str>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let lone_cr = text
            .match_indices('\r')
            .any(|(i, _)| text.as_bytes().get(i + 1) != Some(&b'\n'));
        Self {
            inner: Arc::new(Inner {
                name: name.as_ref().to_owned(),
                text,
                line_starts,
                lone_cr,
            }),
        }
    }

    /// Reads `bytes` (a file's contents) as UTF-8 text named `name`.
    ///
    /// # Errors
    /// A [`Code::NotUtf8`] error at the first byte that does not belong to a UTF-8 character,
    /// with its line and column; its source is the text read lossily (bad bytes shown as
    /// U+FFFD), which is the same as the file's up to that byte.
    pub fn from_utf8(name: impl AsRef<str>, bytes: Vec<u8>) -> Result<Self, Box<Diagnostic>> {
        let err = match String::from_utf8(bytes) {
            Ok(text) => return Ok(Self::new(name, text)),
            Err(err) => err,
        };
        let at = err.utf8_error().valid_up_to();
        let bytes = err.into_bytes();
        let bad = bytes[at];
        let utf16 = bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]);
        let source = Self::new(name, String::from_utf8_lossy(&bytes).into_owned());
        // U+FFFD, which stands for the bad byte in the lossy text, is three bytes long.
        let diagnostic = Diagnostic::error(
            &source,
            Code::NotUtf8,
            Span::new(at, '\u{FFFD}'.len_utf8()),
            format!(
                "the file is not UTF-8 text: byte 0x{bad:02X} is not part of a UTF-8 character"
            ),
        )
        .label("this byte")
        .help(if utf16 {
            "the file starts with a UTF-16 byte-order mark: save it as UTF-8".to_owned()
        } else {
            "edgefn reads YAML as UTF-8: save the file as UTF-8 (an editor's \"encoding\" menu, or \
             `iconv -f LATIN1 -t UTF-8`)"
                .to_owned()
        });
        Err(Box::new(diagnostic))
    }

    /// The file name given at construction.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.inner.text
    }

    /// The text for miette's snippets.
    pub(crate) fn code(&self) -> &dyn miette::SourceCode {
        &*self.inner
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let inner = &*self.inner;
        let offset = offset.min(inner.text.len());
        // The first start is 0, so the line is at least 1.
        let line = inner.line_starts.partition_point(|&start| start <= offset);
        let line_start = inner.line_starts[line - 1];
        let col = inner.text[line_start..offset].chars().count() + 1;
        (line, col)
    }
}

impl miette::SourceCode for Inner {
    /// What miette's own `read_span` of the whole text gives, computed from a window of a few
    /// lines around the span: miette scans from the start of the text, which made rendering a
    /// file's diagnostics quadratic in its size.
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let text = self.text.as_str();
        let end = span.offset().saturating_add(span.len());
        let (window_start, lines_before) = if self.lone_cr || end > text.len() {
            // Lines by miette's count differ from lines by `\n`: the slow, certain way.
            (0, 0)
        } else {
            // The line of the span's start, the context lines before it, and one more (miette
            // looks at the byte before an empty span).
            let line = self
                .line_starts
                .partition_point(|&s| s <= span.offset())
                .saturating_sub(1);
            let first = line.saturating_sub(context_lines_before + 1);
            (self.line_starts[first], first)
        };
        let window_end = if self.lone_cr || end > text.len() {
            text.len()
        } else {
            // Two lines more than the context after the span's last line: miette stops there.
            let last = self
                .line_starts
                .partition_point(|&s| s <= end)
                .saturating_sub(1);
            self.line_starts
                .get(last + context_lines_after + 2)
                .copied()
                .unwrap_or(text.len())
        };
        let window = &text.as_bytes()[window_start..window_end];
        let relative = miette::SourceSpan::new((span.offset() - window_start).into(), span.len());
        let part = window.read_span(&relative, context_lines_before, context_lines_after)?;
        let found = part.span();
        Ok(Box::new(
            miette::MietteSpanContents::new_named(
                self.name.clone(),
                part.data(),
                miette::SourceSpan::new((found.offset() + window_start).into(), found.len()),
                part.line() + lines_before,
                part.column(),
                part.line_count() + lines_before,
            )
            .with_language("yaml"),
        ))
    }
}

/// A byte range in a [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes (may be zero: a position).
    pub len: usize,
}

impl Span {
    /// A span from `offset`, `len` bytes long.
    pub fn new(offset: usize, len: usize) -> Self {
        Self { offset, len }
    }

    /// Offset one past the last byte.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }

    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        let start = self.offset.min(other.offset);
        let end = self.end().max(other.end());
        Span::new(start, end - start)
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.offset, s.len).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_utf8_points_at_the_first_bad_byte() {
        // "é" in Latin-1 is the single byte 0xE9: line 3, after "  xü: caf" (9 characters, one
        // of them the two bytes of "ü", as columns count characters).
        let mut bytes = b"apiVersion: edgefn/v1\nproject: d\xC3\xBC\n  x\xC3\xBC: caf".to_vec();
        bytes.push(0xE9);
        bytes.extend_from_slice(b"\nmore: \xFF\n");
        let d = Source::from_utf8("edgefn.yaml", bytes).unwrap_err();
        assert_eq!(d.code, Code::NotUtf8);
        let loc = d.location();
        assert_eq!(
            (loc.file.as_str(), loc.line, loc.column),
            ("edgefn.yaml", 3, 10)
        );
        assert!(d.message.contains("0xE9"), "{}", d.message);
        assert!(d.help.as_deref().unwrap().contains("UTF-8"));
    }

    #[test]
    fn line_col_counts_lines_and_characters() {
        let s = Source::new("t.yaml", "ab\nçd\n\nx");
        let at = |o| s.line_col(o);
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(2), (1, 3));
        assert_eq!(at(3), (2, 1));
        assert_eq!(at(5), (2, 2)); // after the two bytes of "ç"
        assert_eq!(at(7), (3, 1));
        assert_eq!(at(8), (4, 1));
        assert_eq!(at(99), (4, 2));
        assert_eq!(Source::new("e", "").line_col(0), (1, 1));
    }

    /// Every field of a span's contents, for comparing.
    type Contents = (Vec<u8>, (usize, usize), usize, usize, usize, Option<String>);

    fn contents(
        code: &dyn miette::SourceCode,
        span: (usize, usize),
        b: usize,
        a: usize,
    ) -> Option<Contents> {
        let c = code.read_span(&span.into(), b, a).ok()?;
        Some((
            c.data().to_vec(),
            (c.span().offset(), c.span().len()),
            c.line(),
            c.column(),
            c.line_count(),
            c.name().map(str::to_owned),
        ))
    }

    #[test]
    fn snippets_are_what_miette_reads_from_the_whole_text() {
        for text in [
            "",
            "a",
            "ab\ncd\n",
            "one\ntwo\n\nfour: çé\nfive\nsix\nseven\n\n\nten",
            "crlf: 1\r\nb: 2\r\n\r\nd: [x,\r\n  y]\r\n",
            "lone\rcr\nmixed\r\nend",
            "\n\n\n",
        ] {
            let ours = Source::new("f.yaml", text);
            let theirs = miette::NamedSource::new("f.yaml", text.to_owned());
            // Spans within the text (miette itself panics on some beyond it).
            for offset in 0..=text.len() {
                for len in 0..=(text.len() - offset).min(12) {
                    for before in 0..3 {
                        for after in 0..3 {
                            let span = (offset, len);
                            assert_eq!(
                                contents(ours.code(), span, before, after),
                                contents(&theirs, span, before, after),
                                "{text:?} {span:?} {before} {after}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn utf16_is_named() {
        let d = Source::from_utf8("t.yaml", vec![0xFF, 0xFE, b'a', 0]).unwrap_err();
        assert_eq!(d.location().line, 1);
        assert_eq!(d.location().column, 1);
        assert!(d.help.as_deref().unwrap().contains("UTF-16"));
    }

    #[test]
    fn utf8_is_read_as_it_is() {
        let s = Source::from_utf8("t.yaml", "a: é\n".as_bytes().to_vec()).unwrap();
        assert_eq!(s.text(), "a: é\n");
    }
}
