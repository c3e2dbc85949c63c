//! The `flint` binary's memory allocator: mimalloc, told to keep freed memory for reuse instead
//! of handing it back to the OS, and not to ask for transparent huge pages.
//!
//! This concerns the `flint` binary only. The `flint_cli` library and the other flint crates
//! neither set a global allocator nor change any allocator setting: a program that uses them
//! keeps its own allocator and its own settings.
//!
//! # Why: no purging
//!
//! Each training step allocates and frees the same large activation and gradient buffers
//! (MobileNetV2 at batch 16: 25-77 MB each). glibc's malloc maps and unmaps every one of them,
//! which is why the binary uses mimalloc. But mimalloc (v3) *purges* memory that stays free for
//! `purge_delay` milliseconds (1000 by default): it gives the pages back to the OS
//! (`MADV_DONTNEED`), and the next step faults them in again, the kernel zeroing each page
//! (`clear_page_erms`). A MobileNetV2 step takes about a second, so the buffers of one step were
//! purged before the next step reused them.
//!
//! Purging off does not let memory grow: a freed block stays committed and is reused by the
//! next allocation, so the resident set stays at its high-water mark. It only stops the process
//! from shrinking between steps and after training, which a command does not need.
//!
//! # Why: no transparent huge pages
//!
//! mimalloc asks for transparent huge pages (`madvise(MADV_HUGEPAGE)`) on its arenas, so the
//! first touch of each 2 MiB faults and zeroes all of it at once (`folio_zero_user` under
//! `do_huge_pmd_anonymous_page`). With purging off, that first touch of the working set (about
//! 1.1 GiB, once) was what remained of `clear_page_erms`, and on the VM measured (Firecracker,
//! whose guest hands free 8 MiB blocks back to the host, so a fresh huge page is backed again on
//! first touch) it cost 7 times what the same bytes cost in 4 KiB pages. Huge pages also round
//! the resident set up. Huge pages stay possible where the system enables them for every
//! mapping (`/sys/kernel/mm/transparent_hugepage/enabled` = `always`) unless turned off for the
//! process, which [`configure`] does, as mimalloc's own `allow_thp=0` does.
//!
//! # Measured
//!
//! Protocol F1 (MobileNetV2 on hymenoptera, `finetune`, 1 epoch, 2-core VM, load 2.4-4.2), one
//! binary run interleaved as A (mimalloc's defaults, through the variables below), B (purging
//! off only) and C (both, flint's defaults):
//!
//! | | A | B | C |
//! | --- | ---: | ---: | ---: |
//! | `clear_page_erms`, share of `perf` samples | 20.3 % | 16.1 % | 2.4 % |
//! | page faults (huge-page faults) | 154k-161k (2.1k-2.9k) | 1.2k-1.3k (570-605) | 288k-301k (0) |
//! | train img/s, 1 thread | 16.9, 18.2, 18.3 | 16.5, 18.8, 22.9 | 17.9, 20.8, 21.6 |
//! | system time s, 1 thread | 3.4, 4.4 | 1.5, 2.3 | 1.8, 2.7 |
//! | peak RSS MiB, 1 / 2 threads | 1107-1141 | 1159-1228 | 1144-1198 |
//!
//! Over 3 epochs C kept its 1-epoch fault count (299k) and peak RSS (1189 MiB); A had 867k
//! faults and 16.4 s of system time against B's 1.3k and 3.7 s. PyTorch peaks at 2263 MiB.
//!
//! # Overriding
//!
//! [`configure`] sets *defaults*: a `MIMALLOC_PURGE_DELAY` or `MIMALLOC_ALLOW_THP` variable
//! (read by mimalloc when the process loads) still wins, e.g. `MIMALLOC_PURGE_DELAY=1000
//! MIMALLOC_ALLOW_THP=1 flint ...` restores mimalloc's own behaviour.

use std::ffi::c_long;

// The crate that builds and links mimalloc's C library, which the declarations below call.
use libmimalloc_sys as _;

// Every batch allocates and frees the same large activation and gradient buffers; glibc maps and
// unmaps them each time (a page fault per 4 KiB touched), mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Indices in mimalloc v3's `mi_option_t` (`include/mimalloc.h`, mimalloc 3.3.2 as built by
// libmimalloc-sys 0.1.49), which names no constants for them. The unit test reads each option
// back by its name, so a renumbered enum in a later mimalloc fails there.

/// `mi_option_purge_delay`: milliseconds before free memory is returned to the OS, -1 never.
const MI_OPTION_PURGE_DELAY: c_long = 15;
/// `mi_option_allow_thp`: whether mimalloc asks for transparent huge pages.
const MI_OPTION_ALLOW_THP: c_long = 43;

/// The purge delay flint runs with: never purge.
const PURGE_DELAY_NEVER: c_long = -1;
/// flint's `allow_thp`: no.
const ALLOW_THP_NO: c_long = 0;

// Declared from mimalloc v3's `include/mimalloc.h`; the functions are in the static library that
// libmimalloc-sys builds and links, which declares them only behind its `extended` feature (that
// pulls in another crate).
unsafe extern "C" {
    /// Sets an option's value unless the environment set it when the process loaded.
    fn mi_option_set_default(option: c_long, value: c_long);
    /// An option's current value.
    fn mi_option_get(option: c_long) -> c_long;
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::{c_int, c_ulong};

    /// `PR_SET_THP_DISABLE` from `<linux/prctl.h>`.
    pub const PR_SET_THP_DISABLE: c_int = 41;
    /// `PR_GET_THP_DISABLE` from `<linux/prctl.h>`.
    #[cfg(test)]
    pub const PR_GET_THP_DISABLE: c_int = 42;

    unsafe extern "C" {
        /// glibc's `prctl(2)` wrapper.
        pub fn prctl(option: c_int, ...) -> c_int;
    }

    /// Turns transparent huge pages off for this process (and the processes it starts): the
    /// flag is checked at each fault, so it also covers the arena mimalloc mapped, with
    /// `MADV_HUGEPAGE`, before `main`. Best effort: a kernel without it keeps huge pages.
    pub fn disable_thp() {
        let off: c_ulong = 1;
        let zero: c_ulong = 0;
        // SAFETY: PR_SET_THP_DISABLE takes four unsigned long arguments and touches no memory
        // of ours; a failure (old kernel) only leaves huge pages on.
        let _ = unsafe { prctl(PR_SET_THP_DISABLE, off, zero, zero, zero) };
    }
}

/// Sets flint's mimalloc defaults: freed memory is kept for reuse, never purged, and no
/// transparent huge pages (see the module documentation for why, with the measurements). Call
/// it first thing in `main`; calling it again changes nothing. A `MIMALLOC_PURGE_DELAY` or
/// `MIMALLOC_ALLOW_THP` set in the environment takes precedence.
pub fn configure() {
    // SAFETY: `mi_option_set_default` and `mi_option_get` only store and read a value in
    // mimalloc's option table (valid indices, checked by the unit test); mimalloc reads the
    // options at each purge decision and each new mapping.
    let allow_thp = unsafe {
        mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_NEVER);
        mi_option_set_default(MI_OPTION_ALLOW_THP, ALLOW_THP_NO);
        mi_option_get(MI_OPTION_ALLOW_THP)
    };
    // mimalloc mapped its first arena before `main` (the Rust runtime allocates), with huge
    // pages asked for; the option covers later mappings only.
    #[cfg(target_os = "linux")]
    if allow_thp == 0 {
        linux::disable_thp();
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allow_thp;
}

#[cfg(test)]
mod tests {
    use std::ffi::{c_char, c_void};

    use super::*;

    type OutputFn = Option<unsafe extern "C" fn(msg: *const c_char, arg: *mut c_void)>;

    // More of mimalloc v3's `include/mimalloc.h` (libmimalloc-sys declares
    // `mi_options_print_out` nowhere).
    unsafe extern "C" {
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

    /// What `configure` should leave: flint's value, or the one mimalloc read from `variable`.
    fn expected(variable: &str, name: &str, ours: c_long, before: Option<c_long>) -> c_long {
        if std::env::var_os(variable).is_some() {
            before.unwrap_or_else(|| panic!("mimalloc lists no option '{name}'"))
        } else {
            ours
        }
    }

    // One test, not several: the options are process-wide and tests run in parallel.
    #[test]
    fn configure_sets_flints_defaults_and_an_explicit_setting_wins() {
        let options = [
            (
                "MIMALLOC_PURGE_DELAY",
                "purge_delay",
                MI_OPTION_PURGE_DELAY,
                PURGE_DELAY_NEVER,
            ),
            (
                "MIMALLOC_ALLOW_THP",
                "allow_thp",
                MI_OPTION_ALLOW_THP,
                ALLOW_THP_NO,
            ),
        ];
        let before: Vec<_> = options.iter().map(|o| listed_value(o.1)).collect();
        configure();
        for ((variable, name, index, ours), before) in options.into_iter().zip(before) {
            let expected = expected(variable, name, ours, before);
            // Read back by name: this fails if the index is another option's.
            assert_eq!(
                listed_value(name),
                Some(expected),
                "{name}: {}",
                option_listing()
            );
            // SAFETY: reads a valid option index.
            assert_eq!(unsafe { mi_option_get(index) }, expected, "{name}");
        }

        // Transparent huge pages are off for the whole process, unless asked for.
        #[cfg(target_os = "linux")]
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            // SAFETY: PR_GET_THP_DISABLE takes no further arguments and returns the flag.
            let disabled = unsafe { linux::prctl(linux::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
            assert_eq!(disabled, 1, "PR_GET_THP_DISABLE after configure");
        }

        // A value set explicitly (what mimalloc does for a MIMALLOC_PURGE_DELAY variable at
        // load) is kept by `configure`.
        // SAFETY: stores a value at a valid option index.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 250) };
        configure();
        assert_eq!(
            listed_value("purge_delay"),
            Some(250),
            "{}",
            option_listing()
        );
    }
}
