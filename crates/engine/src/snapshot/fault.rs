//! Surviving a mapped snapshot that is truncated or overwritten in place.
//!
//! Reading a page of a `MAP_SHARED` file mapping that now lies past the end
//! of the file raises SIGBUS, whose default action kills the process, and
//! with it every other index it serves. Each mapped snapshot registers its
//! address range here. The SIGBUS handler, for a fault inside a registered
//! range, maps anonymous zero pages over the whole range (`MAP_FIXED`),
//! marks it faulted and returns: the faulting load is restarted, reads zero,
//! and every later read of that snapshot reads zero without faulting. The
//! search then finishes on zeros (which are in bounds by construction: a
//! zero degree has no neighbours, a zero vector a finite distance), and
//! [`super::Snapshot::check_intact`] reports the snapshot as corrupt. A fault
//! anywhere else goes to the handler that was installed before (Rust's own
//! stack-overflow handler, or the default action), so it still kills.
//!
//! Only async-signal-safe work runs in the handler: atomic loads and stores
//! on a fixed table, `mmap`, `sigaction` and `raise`, all plain system calls.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Snapshots mapped at once that can be protected; more are still mapped,
/// unprotected (a server holds one or two per index).
const SLOTS: usize = 1024;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const LIVE: u8 = 2;

struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// The SIGBUS disposition found at install, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered mapping; unregisters on drop.
pub(crate) struct Guard {
    slot: usize,
}

impl Guard {
    /// Whether a fault replaced the mapping with zero pages.
    pub fn faulted(&self) -> bool {
        TABLE[self.slot].faulted.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The mapping is unmapped after this (the guard is dropped before
        // the map). No thread can be faulting in it now: a reader holds a
        // borrow of the snapshot, which outlives every read.
        let s = &TABLE[self.slot];
        s.state.store(CLAIMED, Ordering::Release);
        s.faulted.store(false, Ordering::Relaxed);
        s.state.store(FREE, Ordering::Release);
    }
}

/// Protect the mapping `[start, start + len)`. `None` when the handler could
/// not be installed or every slot is taken: the mapping is then unprotected.
pub(crate) fn register(start: *const u8, len: usize) -> Option<Guard> {
    if !install() || len == 0 {
        return None;
    }
    let slot = TABLE.iter().position(|s| {
        s.state
            .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })?;
    let s = &TABLE[slot];
    s.start.store(start as usize, Ordering::Relaxed);
    s.len.store(len, Ordering::Relaxed);
    s.faulted.store(false, Ordering::Relaxed);
    s.state.store(LIVE, Ordering::Release);
    Some(Guard { slot })
}

#[allow(unsafe_code)]
fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf, sigemptyset and sigaction are called with valid
        // pointers to zero-initialized plain-data structs owned here. The
        // previous disposition is stored before ours is installed, so the
        // handler always finds it.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE.store(page as usize, Ordering::Relaxed);
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(old);
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) == 0
        }
    })
}

#[allow(unsafe_code)]
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    // si_addr is meaningful only for a kernel-generated fault (si_code > 0),
    // not for a SIGBUS sent with kill().
    let addr = unsafe {
        if info.is_null() || (*info).si_code <= 0 {
            None
        } else {
            Some((*info).si_addr() as usize)
        }
    };
    if let Some(addr) = addr {
        if zero_fill(addr) {
            return;
        }
    }
    chain(sig, info, ctx);
}

/// Replace the registered mapping holding `addr` with zero pages.
#[allow(unsafe_code)]
fn zero_fill(addr: usize) -> bool {
    for s in &TABLE {
        if s.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        let (start, len) = (
            s.start.load(Ordering::Relaxed),
            s.len.load(Ordering::Relaxed),
        );
        if addr < start || addr - start >= len {
            continue;
        }
        let page = PAGE.load(Ordering::Relaxed);
        let span = len.div_ceil(page) * page;
        // SAFETY: errno is thread-local; it is saved and restored so that
        // the interrupted code does not see mmap's. The range is exactly the
        // registered mapping (page-aligned start, its length rounded up to
        // pages, as the kernel rounds it), which stays mapped while
        // registered (see `Guard::drop`): MAP_FIXED replaces only pages of
        // that mapping, with read-only zero pages, atomically for readers.
        unsafe {
            let errno = *libc::__errno_location();
            let p = libc::mmap(
                start as *mut libc::c_void,
                span,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            *libc::__errno_location() = errno;
            if p == libc::MAP_FAILED {
                return false;
            }
        }
        s.faulted.store(true, Ordering::Release);
        return true;
    }
    false
}

/// Hand a fault that is not ours to the previous disposition.
#[allow(unsafe_code)]
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.get();
    let handler = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: restore the default action and re-raise: the signal is
        // blocked while this handler runs, so it is delivered (and kills,
        // with the usual core dump) as soon as the handler returns.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut dfl.sa_mask);
            libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            libc::raise(libc::SIGBUS);
        }
        return;
    }
    let flags = prev.map_or(0, |p| p.sa_flags);
    // SAFETY: `handler` is the function pointer that was installed for
    // SIGBUS before ours, with the signature its SA_SIGINFO flag declares.
    unsafe {
        if flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }
}
