//! The `flint` binary's memory allocator: mimalloc, told never to hand freed memory back to the
//! OS while the process runs.
//!
//! This concerns the `flint` binary only. The `flint_cli` library and the other flint crates
//! neither set a global allocator nor change any allocator setting: a program that uses them
//! keeps its own allocator and its own settings.
//!
//! # Why
//!
//! Each training step allocates and frees the same large activation and gradient buffers
//! (MobileNetV2 at batch 16: 25-77 MB each). glibc's malloc maps and unmaps every one of them,
//! which is why the binary uses mimalloc. But mimalloc (v3) *purges* memory that stays free for
//! `purge_delay` milliseconds (1000 by default): it gives the pages back to the OS
//! (`MADV_DONTNEED`), and the next step faults them in again, each fault zeroing a fresh page
//! (`clear_page_erms` in the kernel, 2 MiB at a time where transparent huge pages apply). A
//! step of MobileNetV2 takes about a second, so the buffers of one step are purged before the
//! next step reuses them.
//!
//! Measured on protocol F1 (MobileNetV2 fine-tuning on hymenoptera, 1 epoch, 1 thread, 2-core
//! VM): with the default delay, 224k page faults and 4145 transparent-huge-page faults (8 GiB
//! zeroed) per epoch and `clear_page_erms` the largest symbol in `perf`; with purging off,
//! 1.2k page faults and 571 huge-page faults (the working set, 1.1 GiB, zeroed once), train
//! 11.7 → 14.6 img/s and validation 29 → 45 img/s, peak RSS 1086 → 1161 MiB (load ≈ 2.5).
//!
//! Purging off costs nothing in peak memory: a freed block stays committed but is reused by the
//! next allocation, so the resident set never exceeds its high-water mark, which the
//! training loop reaches in its first step anyway. It only stops the process from shrinking
//! between steps and after training, which a short-lived command does not need.
//!
//! # Overriding
//!
//! [`configure`] sets *defaults*: an explicit `MIMALLOC_PURGE_DELAY` (or any other `MIMALLOC_*`
//! variable, read by mimalloc when the process loads) still wins, e.g.
//! `MIMALLOC_PURGE_DELAY=1000 flint ...` restores mimalloc's own behaviour.

use std::ffi::c_long;

// The crate that builds and links mimalloc's C library, which the declarations below call.
use libmimalloc_sys as _;

// Every batch allocates and frees the same large activation and gradient buffers; glibc maps and
// unmaps them each time (a page fault per 4 KiB touched), mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (`include/mimalloc.h`, built by
/// libmimalloc-sys 0.1.49 from mimalloc 3.3.2). libmimalloc-sys names no constant for it; the
/// unit test below reads the option back by its name, so a renumbered
/// enum in a later mimalloc fails there rather than setting another option.
const MI_OPTION_PURGE_DELAY: c_long = 15;

/// The purge delay flint runs with: -1, never purge.
const PURGE_DELAY_NEVER: c_long = -1;

// Declared from mimalloc v3's `include/mimalloc.h`; the function is in the static library that
// libmimalloc-sys builds and links, which declares it only behind its `extended` feature (that
// pulls in another crate).
unsafe extern "C" {
    /// Sets an option's value unless the environment set it when the process loaded.
    fn mi_option_set_default(option: c_long, value: c_long);
}

/// Sets flint's mimalloc defaults: freed memory is kept for reuse, never purged (see the module
/// documentation for why and the measurements). Call it first thing in `main`; it can be called
/// again, and a `MIMALLOC_PURGE_DELAY` set in the environment takes precedence.
pub fn configure() {
    // SAFETY: `mi_option_set_default` only stores a value in mimalloc's option table (a valid
    // index, checked by the tests); mimalloc reads the option at each purge decision.
    unsafe { mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_NEVER) };
}

#[cfg(test)]
mod tests {
    use std::ffi::{c_char, c_void};

    use super::*;

    /// mimalloc's name for [`MI_OPTION_PURGE_DELAY`], as `mi_options_print_out` prints it.
    const PURGE_DELAY_NAME: &str = "purge_delay";

    type OutputFn = Option<unsafe extern "C" fn(msg: *const c_char, arg: *mut c_void)>;

    // More of mimalloc v3's `include/mimalloc.h` (libmimalloc-sys declares
    // `mi_options_print_out` nowhere).
    unsafe extern "C" {
        /// An option's current value.
        fn mi_option_get(option: c_long) -> c_long;
        /// Writes every option as `option '<name>': <value>` lines through `out`.
        fn mi_options_print_out(out: OutputFn, arg: *mut c_void);
        /// Sets an option's value, as a `MIMALLOC_*` environment variable does at load.
        fn mi_option_set(option: c_long, value: c_long);
    }

    /// mimalloc's option listing, one `option '<name>': <value>` line per option.
    fn option_listing() -> String {
        unsafe extern "C" fn collect(msg: *const c_char, arg: *mut c_void) {
            // SAFETY: mimalloc passes a NUL-terminated message and our `arg`, a `String`.
            let (msg, out) = unsafe { (std::ffi::CStr::from_ptr(msg), &mut *arg.cast::<String>()) };
            out.push_str(&msg.to_string_lossy());
        }
        let mut out = String::new();
        // SAFETY: `collect` matches mimalloc's output function type and `arg` outlives the call.
        unsafe { mi_options_print_out(Some(collect), (&raw mut out).cast()) };
        out
    }

    /// The value mimalloc lists for the option called `name`.
    fn listed_value(name: &str) -> Option<c_long> {
        let prefix = format!("option '{name}': ");
        option_listing()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
    }

    // One test, not several: the options are process-wide and tests run in parallel.
    #[test]
    fn purge_delay_is_off_after_configure_and_an_explicit_setting_wins() {
        configure();
        let expected = match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(value) => value.parse().expect("MIMALLOC_PURGE_DELAY is a number"),
            Err(_) => PURGE_DELAY_NEVER,
        };
        // Read back by name: this fails if MI_OPTION_PURGE_DELAY indexes another option.
        assert_eq!(
            listed_value(PURGE_DELAY_NAME),
            Some(expected),
            "{}",
            option_listing()
        );
        // SAFETY: reads a valid option index.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, expected);

        // A value set explicitly (what mimalloc does for a MIMALLOC_PURGE_DELAY variable at
        // load) is kept by `configure`.
        // SAFETY: stores a value at a valid option index.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 250) };
        configure();
        assert_eq!(
            listed_value(PURGE_DELAY_NAME),
            Some(250),
            "{}",
            option_listing()
        );
    }
}
