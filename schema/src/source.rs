//! Source text with a name, and byte spans into it.
//!
//! Every diagnostic points into a [`Source`]; spans are byte offsets so that they can be handed
//! to miette as they are, and [`Source::line_col`] turns them into the 1-based line and column a
//! user reads.

use std::sync::Arc;

/// A named piece of text (a manifest, a test case) that diagnostics point into.
#[derive(Debug, Clone)]
pub struct Source {
    inner: Arc<miette::NamedSource<String>>,
    text: Arc<str>,
}

impl Source {
    /// Wraps `text`, read from the file called `name` (shown to users as it is).
    pub fn new(name: impl AsRef<str>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        Self {
            text: Arc::from(text.as_str()),
            inner: Arc::new(miette::NamedSource::new(name, text).with_language("yaml")),
        }
    }

    /// The file name given at construction.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn inner_named(&self) -> &miette::NamedSource<String> {
        &self.inner
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
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
