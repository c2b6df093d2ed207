//! A small file system for one test (a tmpfs of a few megabytes, mounted by the test,
//! which runs as root on Linux), to fill up or make read-only under a service's data
//! directory. Unmounted when dropped, also when the test fails. Where nothing can be
//! mounted the test is skipped with a notice, but in CI (`CI=true`, or
//! `SLIPWAY_REQUIRE_MOUNT=1`) it fails: CI must never skip it silently.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

pub struct SmallFs {
    pub dir: PathBuf,
    _parent: tempfile::TempDir,
}

fn mount_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("SLIPWAY_REQUIRE_MOUNT").is_ok_and(|v| v == "1")
}

fn run(command: &mut Command) -> Result<(), String> {
    match command.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

impl SmallFs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. `"8m"`) on a fresh directory.
    pub fn mount(size: &str) -> Option<SmallFs> {
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("small");
        std::fs::create_dir(&dir).expect("mount point");
        let mounted = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir));
        match mounted {
            Ok(()) => Some(SmallFs { dir, _parent: parent }),
            Err(error) if mount_required() => {
                panic!("cannot mount a tmpfs here ({error}); this test needs root on Linux")
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot mount a tmpfs ({error}); run as root, or set CI=true to require it");
                None
            }
        }
    }

    /// Writes a file until the file system is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler file");
        let block = vec![0x5a_u8; 64 * 1024];
        loop {
            if let Err(error) = file.write_all(&block) {
                assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "filling: {error}");
                break;
            }
        }
        // Whatever is left of the last block.
        while file.write_all(&[0x5a]).is_ok() {}
        path
    }

    /// Remounts read-only (`true`) or read-write.
    pub fn remount(&self, read_only: bool) {
        let option = if read_only { "remount,ro" } else { "remount,rw" };
        run(Command::new("mount").args(["-o", option]).arg(&self.dir)).expect("remounting");
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily when a process still holds a file there; the kernel finishes it.
        if run(Command::new("umount").arg(&self.dir)).is_err()
            && let Err(error) = run(Command::new("umount").arg("-l").arg(&self.dir))
        {
            eprintln!("could not unmount {}: {error}", self.dir.display());
        }
    }
}
