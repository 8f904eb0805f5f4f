//! Test helper: a small real file system (tmpfs) to fill up.

use std::fs;
use std::io::Write;
use std::path::Path;

/// A tmpfs of `size` mounted on a new folder, unmounted when dropped; `None` (with a
/// message) where mounting is not permitted.
pub(crate) struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    #[allow(clippy::print_stderr)]
    pub(crate) fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root): no full-disk test");
            return None;
        }
        Some(Tmpfs(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the file system with `filler` until a write fails.
    pub(crate) fn fill(&self, filler: &Path) {
        let mut f = fs::File::create(filler).expect("create");
        let block = vec![0xa5u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}
