//! Every filesystem of an image mounted strictly read-only: one read-only
//! loop device per partition (offset and size limit over the image, opened
//! read-only), mounted with the options that keep each filesystem from
//! writing (no journal replay), and all of it undone by
//! [`Attached::release`]. Linux only; needs root (CAP_SYS_ADMIN).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::disk::{detect_fs, DiskError, Filesystem, FsKind, Layout, ReadAt, Result};

// <linux/loop.h>
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Attempts at taking a free loop device that another process may take first.
const LOOP_ATTEMPTS: usize = 16;
/// How long release waits for the kernel to let go of a loop device after its unmount.
const CLEAR_WAIT: Duration = Duration::from_secs(5);

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn loop_info(offset: u64, sizelimit: u64) -> LoopInfo64 {
    LoopInfo64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset,
        sizelimit,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    }
}

/// What became of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub index: u32,
    /// The filesystem found there (kind, UUID, label), if any.
    pub fs: Option<Filesystem>,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Mounted {
        at: PathBuf,
        device: PathBuf,
        /// The mount's data options (`noload`, `norecovery,nouuid`, …).
        options: String,
    },
    /// Not mounted, and why ("swap space", "vfat: not readable by this kernel", …).
    Skipped { reason: String },
}

/// An image's filesystems, mounted read-only under one folder (`p<index>`).
#[derive(Debug)]
pub struct Attached {
    pub image: PathBuf,
    pub under: PathBuf,
    pub mounts: Vec<Mount>,
    /// Mount points still mounted, loop devices still attached, folders
    /// made: what release undoes, in reverse.
    mounted: Vec<PathBuf>,
    loops: Vec<LoopDevice>,
    created: Vec<PathBuf>,
}

#[derive(Debug)]
struct LoopDevice {
    number: u32,
    offset: u64,
}

impl LoopDevice {
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/loop{}", self.number))
    }

    fn sys(&self, what: &str) -> Option<String> {
        let p = format!("/sys/block/loop{}/loop/{what}", self.number);
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Still bound to this image at this offset (the number may have been
    /// reused by someone else since).
    fn bound_to(&self, image: &Path) -> bool {
        let backing = self.sys("backing_file");
        let offset = self.sys("offset").and_then(|o| o.parse::<u64>().ok());
        backing.is_some_and(|b| Path::new(&b) == image) && offset == Some(self.offset)
    }
}

/// The filesystems this kernel reads (`/proc/filesystems`).
pub fn kernel_filesystems() -> io::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string("/proc/filesystems")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_string)
        .collect())
}

/// The mount data to try for a driver, in order: btrfs's log-replay switch
/// has had two spellings, and older kernels know neither.
fn options_for(driver: &str) -> &'static [&'static str] {
    match driver {
        // No journal replay: a replay writes.
        "ext4" => &["noload"],
        // No log recovery; nouuid: a clone of a volume mounted elsewhere on
        // this host (or a second point of it) has the same UUID.
        "xfs" => &["norecovery,nouuid"],
        "btrfs" => &["rescue=nologreplay", "nologreplay", ""],
        "vfat" => &["utf8"],
        _ => &[""],
    }
}

fn errno() -> io::Error {
    io::Error::last_os_error()
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl Attached {
    /// Mounts every partition of `layout` whose filesystem this kernel
    /// reads at `under/p<index>`, read-only; the others are recorded with
    /// the reason. Refuses, before doing anything, an image smaller than
    /// its layout or an `under` that is not a folder; a partition whose
    /// mount fails (a damaged filesystem) is recorded, not fatal.
    pub fn mount_all(image: &Path, layout: &Layout, under: &Path) -> Result<Attached> {
        let image = std::fs::canonicalize(image)
            .map_err(|e| DiskError::io("open image", image.display(), e))?;
        let file =
            File::open(&image).map_err(|e| DiskError::io("open image", image.display(), e))?;
        let size = file
            .size()
            .map_err(|e| DiskError::io("open image", image.display(), e))?;
        for p in &layout.partitions {
            if p.start.checked_add(p.size).is_none_or(|end| end > size) {
                return Err(DiskError::Invalid(format!(
                    "{}: partition {} (bytes {}+{}) is past the image's end ({size} bytes): not the layout of this image",
                    image.display(),
                    p.index,
                    p.start,
                    p.size
                )));
            }
        }
        if under.exists() && !under.is_dir() {
            return Err(DiskError::Invalid(format!(
                "{}: not a folder to mount under",
                under.display()
            )));
        }
        let control = File::options()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .map_err(|e| {
                DiskError::io(
                    "open loop control (loop devices need root and the loop module)",
                    "/dev/loop-control",
                    e,
                )
            })?;
        let kernel = kernel_filesystems()
            .map_err(|e| DiskError::io("read the kernel's filesystems", "/proc/filesystems", e))?;
        let mut me = Attached {
            image: image.clone(),
            under: under.to_path_buf(),
            mounts: Vec::new(),
            mounted: Vec::new(),
            loops: Vec::new(),
            created: Vec::new(),
        };
        if !under.exists() {
            std::fs::create_dir_all(under)
                .map_err(|e| DiskError::io("make the mount folder", under.display(), e))?;
            me.created.push(under.to_path_buf());
        }
        for p in &layout.partitions {
            let fs = detect_fs(&file, p.start, p.size)?;
            let skip = |reason: String| State::Skipped { reason };
            let state = match fs.as_ref().map(|f| (f.kind, f.kind.driver())) {
                None => skip("no filesystem skiff recognizes".into()),
                Some((FsKind::Swap, _)) => skip("swap space: nothing to mount".into()),
                Some((FsKind::LvmPv, _)) => {
                    skip("an LVM physical volume: its logical volumes are not assembled".into())
                }
                Some((kind, Some(driver))) if !kernel.contains(driver) => skip(format!(
                    "{}: not readable by this kernel (no {driver} in /proc/filesystems)",
                    kind.name()
                )),
                Some((_, Some(driver))) => {
                    me.mount_one(&control, &file, p.index, p.start, p.size, driver)?
                }
                Some((kind, None)) => skip(format!("{}: nothing to mount", kind.name())),
            };
            me.mounts.push(Mount {
                index: p.index,
                fs,
                state,
            });
        }
        Ok(me)
    }

    /// One partition: its folder, its loop device, its mount. A failed
    /// mount undoes the other two and is recorded; a loop device that
    /// cannot be had is an error (this machine cannot mount anything).
    fn mount_one(
        &mut self,
        control: &File,
        file: &File,
        index: u32,
        start: u64,
        size: u64,
        driver: &str,
    ) -> Result<State> {
        let at = self.under.join(format!("p{index}"));
        match std::fs::create_dir(&at) {
            Ok(()) => self.created.push(at.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let empty = std::fs::read_dir(&at).is_ok_and(|mut d| d.next().is_none());
                if !empty {
                    return Ok(State::Skipped {
                        reason: format!("{}: exists and is not an empty folder", at.display()),
                    });
                }
            }
            Err(e) => return Err(DiskError::io("make the mount folder", at.display(), e)),
        }
        let (device, dev_file) = attach_loop(control, file, start, size).map_err(|e| {
            DiskError::io("attach a read-only loop device", self.image.display(), e)
        })?;
        self.loops.push(LoopDevice {
            number: device,
            offset: start,
        });
        let dev = PathBuf::from(format!("/dev/loop{device}"));
        let mut last = None;
        for options in options_for(driver) {
            match mount(&dev, &at, driver, options) {
                Ok(()) => {
                    self.mounted.push(at.clone());
                    drop(dev_file);
                    return Ok(State::Mounted {
                        at,
                        device: dev,
                        options: options.to_string(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        drop(dev_file);
        let why = last.map(|e| e.to_string()).unwrap_or_default();
        if let Some(l) = self.loops.pop() {
            clear_loop(&l, &self.image);
        }
        if self.created.last() == Some(&at) {
            self.created.pop();
            let _ = std::fs::remove_dir(&at);
        }
        Ok(State::Skipped {
            reason: format!("{driver}: the kernel refused to mount it read-only: {why}"),
        })
    }

    /// Unmounts everything, detaches the loop devices and removes the
    /// folders made; collects what could not be undone. Calling it again
    /// (or dropping) finds nothing left to do.
    pub fn release(mut self) -> Result<()> {
        let problems = self.undo();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DiskError::Invalid(format!(
                "{}: release left: {}",
                self.image.display(),
                problems.join("; ")
            )))
        }
    }

    fn undo(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        while let Some(at) = self.mounted.pop() {
            if let Err(e) = unmount(&at) {
                problems.push(format!("{}: unmount: {e}", at.display()));
            }
        }
        while let Some(l) = self.loops.pop() {
            if let Some(p) = clear_loop(&l, &self.image) {
                problems.push(p);
            }
        }
        while let Some(dir) = self.created.pop() {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("{}: remove folder: {e}", dir.display())),
            }
        }
        problems
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        for p in self.undo() {
            tracing::warn!("flr: {p}");
        }
    }
}

/// A free loop device bound read-only to `size` bytes of `file` at
/// `offset`, cleared automatically when its last user goes; returns its
/// number and the open device (its first user).
fn attach_loop(control: &File, file: &File, offset: u64, size: u64) -> io::Result<(u32, File)> {
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..LOOP_ATTEMPTS {
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(errno());
        }
        let path = format!("/dev/loop{n}");
        let dev = File::options()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        let config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: loop_info(offset, size),
            reserved: [0; 8],
        };
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &config) };
        let e = if r == 0 { None } else { Some(errno()) };
        match e.as_ref().and_then(io::Error::raw_os_error) {
            None => return checked_read_only(n as u32, dev),
            Some(libc::EBUSY) => last = e.unwrap_or(last),
            // Kernels before 5.8: bind, then set the offset and flags.
            Some(libc::ENOTTY) | Some(libc::EINVAL) => {
                if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, file.as_raw_fd()) } < 0 {
                    let e = errno();
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        last = e;
                        continue;
                    }
                    return Err(e);
                }
                let info = loop_info(offset, size);
                if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &info) } < 0 {
                    let e = errno();
                    unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
                    return Err(e);
                }
                return checked_read_only(n as u32, dev);
            }
            Some(_) => return Err(e.unwrap_or(last)),
        }
    }
    Err(last)
}

/// The kernel's word that the device is read-only, or the device is let go.
fn checked_read_only(n: u32, dev: File) -> io::Result<(u32, File)> {
    let ro = std::fs::read_to_string(format!("/sys/block/loop{n}/ro")).unwrap_or_default();
    if ro.trim() != "1" {
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
        return Err(io::Error::other(format!(
            "/dev/loop{n} is not read-only after attaching it read-only"
        )));
    }
    Ok((n, dev))
}

/// Detaches a loop device still bound to `image`: unmounting lets the
/// kernel clear it (autoclear); this waits for that, then clears it
/// itself. `Some` says what is left.
fn clear_loop(l: &LoopDevice, image: &Path) -> Option<String> {
    let deadline = Instant::now() + CLEAR_WAIT;
    let mut asked = false;
    while l.bound_to(image) {
        if !asked {
            asked = true;
            if let Ok(dev) = File::open(l.path()) {
                unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
            }
        }
        if Instant::now() > deadline {
            return Some(format!(
                "{}: still attached (in use); the kernel clears it when its last user closes it",
                l.path().display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn mount(dev: &Path, at: &Path, fstype: &str, options: &str) -> io::Result<()> {
    let (src, dst) = (c_path(dev)?, c_path(at)?);
    let fstype = CString::new(fstype).map_err(io::Error::other)?;
    let data = CString::new(options).map_err(io::Error::other)?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// A plain unmount, detached (lazy) when the filesystem is busy; not
/// mounted any more counts as done.
fn unmount(at: &Path) -> io::Result<()> {
    let dst = c_path(at)?;
    if unsafe { libc::umount2(dst.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = errno();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EBUSY) => {
            if unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(errno())
            }
        }
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests;
