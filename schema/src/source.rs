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
    inner: Arc<miette::NamedSource<String>>,
    text: Arc<str>,
    /// Byte offset of each line's start, so that [`Source::line_col`] costs a binary search,
    /// not a scan: a file may have a diagnostic on each of its lines.
    line_starts: Arc<[usize]>,
}

impl Source {
    /// Wraps `text`, read from the file called `name` (shown to users as it is).
    pub fn new(name: impl AsRef<str>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            line_starts,
            text: Arc::from(text.as_str()),
            inner: Arc::new(miette::NamedSource::new(name, text).with_language("yaml")),
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
            format!("the file is not UTF-8 text: byte 0x{bad:02X} is not part of a UTF-8 character"),
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
        // The first start is 0, so the line is at least 1.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let col = self.text[line_start..offset].chars().count() + 1;
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
        assert_eq!((loc.file.as_str(), loc.line, loc.column), ("edgefn.yaml", 3, 10));
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
