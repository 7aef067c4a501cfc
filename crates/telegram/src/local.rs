//! Opening a local-mode file without trusting its path.
//!
//! A `telegram-bot-api --local` server answers `getFile` with an absolute
//! path on its own disk, and we read that path from a shared volume. The
//! path is input from another process: read blindly, it could name
//! `/etc/passwd`, `/proc/self/environ`, a symlink planted in the volume or
//! a FIFO that blocks the reader forever, and the bot would publish it.
//! So the path must lie beneath the server's working directory
//! (`TELEGRAM_LOCAL_DIR`), no component of it may be a symlink, and what
//! is opened must be a regular file. The checks are made by the kernel on
//! the file actually opened (no check-then-open race): `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` relative to the directory, or,
//! where `openat2` is missing, one `O_NOFOLLOW` `openat` per component;
//! then `fstat` of the open descriptor.

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

/// Why a `file_path` was refused. Never retried: the same path is
/// refused again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalRefusal {
    /// It is not beneath `TELEGRAM_LOCAL_DIR` (or climbs out with `..`).
    Outside,
    /// A component of it is a symbolic link.
    Symlink,
    /// It is not a regular file; the kind it is instead.
    NotRegular(&'static str),
}

impl fmt::Display for LocalRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Outside => f.write_str("it is outside TELEGRAM_LOCAL_DIR"),
            Self::Symlink => f.write_str("a symbolic link is on its path"),
            Self::NotRegular(kind) => write!(f, "it is not a regular file but {kind}"),
        }
    }
}

/// What went wrong opening a local file.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The path is not acceptable (see [`LocalRefusal`]).
    Refused(LocalRefusal),
    /// The path is acceptable but could not be opened (missing, no
    /// permission, the volume not mounted): the operator's to fix.
    Io(std::io::Error),
    /// `TELEGRAM_LOCAL_DIR` itself could not be opened.
    Dir(std::io::Error),
}

/// How the path is resolved; both give the same answers. `openat2` is
/// Linux 5.6 and later; [`Resolver::Components`] is its fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    Openat2,
    /// Production code reaches the fallback only when `openat2` fails
    /// with ENOSYS; tests pick it directly.
    #[cfg_attr(not(test), allow(dead_code))]
    Components,
}

/// Flags of the final open. `NONBLOCK` so that opening a FIFO returns at
/// once (a regular file ignores it); `NOCTTY` so that a terminal device
/// never becomes our controlling terminal; `NOFOLLOW` refuses a final
/// symlink even on the fallback path.
fn file_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

/// Opens `file_path` (absolute, as `getFile` gave it) if it is a regular
/// file beneath `dir`, with symlinks nowhere on the way from `dir` to it.
/// Blocking: call it off the async runtime.
pub(crate) fn open_beneath(dir: &Path, file_path: &Path, resolver: Resolver) -> Result<std::fs::File, OpenError> {
    let rel = relative_beneath(dir, file_path).map_err(OpenError::Refused)?;
    // The operator chose `dir`: symlinks in it are theirs to make.
    let root = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| OpenError::Dir(e.into()))?;
    let fd = match resolver {
        Resolver::Openat2 => match openat2_beneath(&root, rel) {
            // No openat2: a kernel before 5.6, or a seccomp profile that
            // predates it (older container runtimes answer EPERM).
            Err(Errno::NOSYS | Errno::PERM) => by_components(&root, rel)?,
            other => other.map_err(|e| classify(&root, rel, e))?,
        },
        Resolver::Components => by_components(&root, rel)?,
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| OpenError::Io(e.into()))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(std::fs::File::from(fd)),
        other => Err(OpenError::Refused(LocalRefusal::NotRegular(kind_name(other)))),
    }
}

/// `file_path` relative to `dir`, judged on the text alone: the kernel
/// checks again on the real file system.
fn relative_beneath<'a>(dir: &Path, file_path: &'a Path) -> Result<&'a Path, LocalRefusal> {
    let rel = file_path.strip_prefix(dir).map_err(|_| LocalRefusal::Outside)?;
    // A Bot API server never writes `..` into a path; refusing it outright
    // spares the fallback from tracking where `..` leads.
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(LocalRefusal::Outside);
    }
    if rel.as_os_str().is_empty() {
        return Err(LocalRefusal::NotRegular("a directory"));
    }
    Ok(rel)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn openat2_beneath(root: &OwnedFd, rel: &Path) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::ResolveFlags;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    rustix::fs::openat2(root, rel, file_flags(), Mode::empty(), resolve)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn openat2_beneath(_root: &OwnedFd, _rel: &Path) -> rustix::io::Result<OwnedFd> {
    Err(Errno::NOSYS)
}

/// Walks `rel` one component at a time, each opened with `O_NOFOLLOW`
/// relative to the one before: a symlink anywhere fails the walk, and
/// since `rel` has no `..`, nothing can lead out of `root`.
fn by_components(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, OpenError> {
    let names: Vec<_> = rel.components().map(|c| c.as_os_str()).collect();
    let Some((last, dirs)) = names.split_last() else {
        return Err(OpenError::Refused(LocalRefusal::NotRegular("a directory")));
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mut current: Option<OwnedFd> = None;
    for name in dirs {
        let at = current.as_ref().unwrap_or(root);
        let next =
            rustix::fs::openat(at, *name, dir_flags, Mode::empty()).map_err(|e| classify(at, Path::new(name), e))?;
        current = Some(next);
    }
    let at = current.as_ref().unwrap_or(root);
    rustix::fs::openat(at, *last, file_flags(), Mode::empty()).map_err(|e| classify(at, Path::new(last), e))
}

/// Names a failed open. Errors that only a refused path causes become a
/// [`LocalRefusal`]; the rest stay I/O errors for the operator.
fn classify(at: &OwnedFd, path: &Path, e: Errno) -> OpenError {
    match e {
        // RESOLVE_BENEATH: the path led out of the directory.
        Errno::XDEV => OpenError::Refused(LocalRefusal::Outside),
        // RESOLVE_NO_SYMLINKS or O_NOFOLLOW met a symlink.
        Errno::LOOP => OpenError::Refused(LocalRefusal::Symlink),
        // Opening a socket.
        Errno::NXIO => OpenError::Refused(LocalRefusal::NotRegular("a socket or device")),
        // A component that should be a directory is not: with O_NOFOLLOW
        // that includes a symlink to one; say which, for the log.
        Errno::NOTDIR => {
            let lstat = rustix::fs::statat(at, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
            match lstat.map(|s| FileType::from_raw_mode(s.st_mode)) {
                Ok(FileType::Symlink) => OpenError::Refused(LocalRefusal::Symlink),
                _ => OpenError::Refused(LocalRefusal::NotRegular("under a file that is not a directory")),
            }
        }
        e => OpenError::Io(e.into()),
    }
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Symlink => "a symbolic link",
        _ => "of an unknown kind",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const BOTH: [Resolver; 2] = [Resolver::Openat2, Resolver::Components];

    /// A Bot API directory with a regular file at `<token>/documents/file_1.pdf`,
    /// and a secret file next to (outside) it.
    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: std::path::PathBuf,
        secret: std::path::PathBuf,
        docs: std::path::PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bot-api");
        let docs = dir.join("123:tok").join("documents");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("file_1.pdf"), b"pdf bytes").unwrap();
        let secret = tmp.path().join("secret.txt");
        std::fs::write(&secret, b"do not publish").unwrap();
        Fixture {
            dir,
            secret,
            docs,
            _tmp: tmp,
        }
    }

    fn refusal(f: &Fixture, path: &Path, r: Resolver) -> LocalRefusal {
        match open_beneath(&f.dir, path, r) {
            Err(OpenError::Refused(why)) => why,
            other => panic!("{path:?} with {r:?}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_regular_file_beneath_the_directory_opens() {
        let f = fixture();
        for r in BOTH {
            let mut file = open_beneath(&f.dir, &f.docs.join("file_1.pdf"), r).unwrap();
            let mut s = String::new();
            file.read_to_string(&mut s).unwrap();
            assert_eq!(s, "pdf bytes", "{r:?}");
        }
    }

    #[test]
    fn paths_outside_the_directory_are_refused() {
        let f = fixture();
        let escape = f.docs.join("../../../secret.txt");
        assert!(escape.exists(), "the escape leads to a real file");
        for r in BOTH {
            for p in [
                Path::new("/etc/passwd"),
                Path::new("/proc/self/environ"),
                &f.secret,
                &escape,
            ] {
                assert_eq!(refusal(&f, p, r), LocalRefusal::Outside, "{p:?} {r:?}");
            }
        }
    }

    #[test]
    fn the_kernel_refuses_an_escape_that_the_text_check_lets_through() {
        let f = fixture();
        let root = rustix::fs::open(&f.dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(
            openat2_beneath(&root, Path::new("../secret.txt")).unwrap_err(),
            Errno::XDEV
        );
        assert_eq!(
            openat2_beneath(&root, &f.secret).unwrap_err(),
            Errno::XDEV,
            "absolute paths too"
        );
    }

    #[test]
    fn symlinks_anywhere_on_the_path_are_refused() {
        let f = fixture();
        std::os::unix::fs::symlink(&f.secret, f.docs.join("out.pdf")).unwrap();
        // Even one that stays inside: a symlink is never what the server writes.
        std::os::unix::fs::symlink(f.docs.join("file_1.pdf"), f.docs.join("in.pdf")).unwrap();
        std::os::unix::fs::symlink(f.secret.parent().unwrap(), f.dir.join("up")).unwrap();
        std::os::unix::fs::symlink("/proc/self", f.dir.join("proc")).unwrap();
        for r in BOTH {
            for p in [
                f.docs.join("out.pdf"),
                f.docs.join("in.pdf"),
                f.dir.join("up/secret.txt"),
                f.dir.join("proc/environ"),
            ] {
                assert_eq!(refusal(&f, &p, r), LocalRefusal::Symlink, "{p:?} {r:?}");
            }
        }
    }

    #[test]
    fn fifos_sockets_and_directories_are_refused_without_blocking() {
        let f = fixture();
        let fifo = f.docs.join("file_2.pdf");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let sock = f.docs.join("file_3.pdf");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for r in BOTH {
            // A blocking open of a FIFO with no writer would hang here.
            assert_eq!(refusal(&f, &fifo, r), LocalRefusal::NotRegular("a FIFO"), "{r:?}");
            assert!(matches!(refusal(&f, &sock, r), LocalRefusal::NotRegular(_)), "{r:?}");
            assert_eq!(
                refusal(&f, &f.docs, r),
                LocalRefusal::NotRegular("a directory"),
                "{r:?}"
            );
            assert_eq!(refusal(&f, &f.dir, r), LocalRefusal::NotRegular("a directory"), "{r:?}");
            assert!(matches!(
                refusal(&f, &f.docs.join("file_1.pdf/x"), r),
                LocalRefusal::NotRegular(_)
            ));
        }
    }

    #[test]
    fn a_missing_file_or_directory_is_an_error_for_the_operator_not_a_refusal() {
        let f = fixture();
        for r in BOTH {
            assert!(matches!(
                open_beneath(&f.dir, &f.docs.join("file_9.pdf"), r),
                Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
            ));
        }
        let gone = f.dir.join("not-mounted");
        assert!(matches!(
            open_beneath(&gone, &gone.join("x/file_1.pdf"), Resolver::Openat2),
            Err(OpenError::Dir(_))
        ));
    }
}
