//! The few system calls the tree needs, each confined to a directory fd:
//! `openat2` that stays beneath it and follows no link, streaming `readdir`,
//! `fstatat` without following, `readlinkat`.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Nothing outside the directory, no symbolic link anywhere in the path, no
/// `/proc` magic link, no other mounted filesystem.
const RESOLVE: u64 = libc::RESOLVE_BENEATH
    | libc::RESOLVE_NO_SYMLINKS
    | libc::RESOLVE_NO_MAGICLINKS
    | libc::RESOLVE_NO_XDEV;

/// `openat2(dir, path, flags | O_CLOEXEC)` with [`RESOLVE`]. The kernel
/// answers EAGAIN when a rename raced the lookup; that is retried.
pub fn open_beneath(dir: BorrowedFd<'_>, path: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = RESOLVE;
    let mut tries = 0;
    loop {
        // SAFETY: path is NUL-terminated and how lives across the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) if tries < 16 => tries += 1,
            _ => return Err(err),
        }
    }
}

/// One name (no `/`) as a C string; names read from a directory never hold NUL.
pub fn c_name(name: &OsStr) -> CString {
    CString::new(name.as_bytes()).expect("directory names hold no NUL")
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`, or `fstat(dir)` for an empty name.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: name is NUL-terminated, st is writable.
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) };
    if r == 0 {
        Ok(st)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The text of a symbolic link `name` in `dir` (an empty name reads the link
/// an `O_PATH|O_NOFOLLOW` fd stands for). Never resolved.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is writable for its length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

/// A directory being read one entry at a time, so a huge directory costs no
/// memory beyond what the caller keeps.
pub struct DirStream {
    dir: *mut libc::DIR,
}

/// A name read from a directory and its `d_type` (`DT_UNKNOWN` on some
/// filesystems: then ask `fstatat`).
pub struct DirEntry {
    pub name: OsString,
    pub d_type: u8,
}

impl DirStream {
    /// Takes a fd opened `O_RDONLY|O_DIRECTORY`.
    pub fn new(fd: OwnedFd) -> io::Result<DirStream> {
        let raw = fd.as_raw_fd();
        // SAFETY: on success the DIR owns the descriptor (closed by closedir).
        let dir = unsafe { libc::fdopendir(raw) };
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(fd);
        Ok(DirStream { dir })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the DIR keeps its descriptor open until drop.
        unsafe { BorrowedFd::borrow_raw(libc::dirfd(self.dir)) }
    }

    /// The next entry but `.` and `..`; `None` at the end.
    pub fn next_entry(&mut self) -> Option<io::Result<DirEntry>> {
        loop {
            // SAFETY: errno is thread-local; readdir reports errors only there.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: self.dir is a live DIR owned by this stream.
            let ent = unsafe { libc::readdir64(self.dir) };
            if ent.is_null() {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(0) | None => None,
                    Some(_) => Some(Err(err)),
                };
            }
            // SAFETY: d_name is NUL-terminated inside the entry readdir returned.
            let (name, d_type) = unsafe {
                let name = CStr::from_ptr((*ent).d_name.as_ptr());
                (name.to_bytes(), (*ent).d_type)
            };
            if name == b"." || name == b".." {
                continue;
            }
            return Some(Ok(DirEntry {
                name: OsString::from_vec(name.to_vec()),
                d_type,
            }));
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: self.dir came from fdopendir and is closed once.
        unsafe { libc::closedir(self.dir) };
    }
}

/// Opens `path` beneath `dir` for reading if it is a regular file. It is
/// looked at first through an `O_PATH` fd, so a device or FIFO is never
/// opened (opening some devices acts on them); anything else comes back as
/// `Ok(Err(its stat))` for the caller to name.
pub fn open_regular(
    dir: BorrowedFd<'_>,
    path: &CStr,
) -> io::Result<Result<(std::fs::File, libc::stat), libc::stat>> {
    let probe = open_beneath(dir, path, libc::O_PATH | libc::O_NOFOLLOW)?;
    let st = lstat_at(probe.as_fd(), c"")?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(Err(st));
    }
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let file = std::fs::File::from(open_beneath(dir, path, flags)?);
    let again = lstat_at(file.as_fd(), c"")?;
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
        return Err(io::Error::other("the file changed while it was opened"));
    }
    Ok(Ok((file, again)))
}
