//! The allocator of Pitgun's binaries (the `pitgun` binary, and the benchmark programs in
//! `bench/`, which include this file so they measure with the same allocator).

/// mimalloc for Rust and, through its `override` feature, for the C libraries linked in
/// (librdkafka, RocksDB): librdkafka allocates each fetched message on its broker thread and
/// the engine frees it on another, which under glibc's arenas is a lock handoff per record.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the Rust bindings name no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp` in the same enum.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Allocator options, set before `main`: mimalloc reserves its first arena on the first
/// allocation, which the Rust runtime makes before `main` runs.
/// - Transparent huge pages: every fresh arena page faulted in zeroed 2 MB at once, and the
///   processor spent ~12 % of its CPU in the kernel clearing pages; 4 KB pages cost far less.
/// - Purge delay: librdkafka frees each fetch buffer (~1 MB) as its last record is consumed and
///   allocates the next one at once; with the 10 ms default the memory went back to the OS and
///   was faulted in (and zeroed) again for every fetch. A second keeps it for reuse.
///
/// Either stays overridable by mimalloc's usual environment variables (`MIMALLOC_ALLOW_THP`,
/// `MIMALLOC_PURGE_DELAY`), so a benchmark can run a baseline with the allocator's defaults.
extern "C" fn set_allocator_options() {
    extern "C" {
        fn getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
    }
    for (option, env, value) in [(MI_OPTION_ALLOW_THP, c"MIMALLOC_ALLOW_THP", 0), (MI_OPTION_PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 1000)] {
        // libc's getenv, not std's: std's allocates, and the first allocation sets mimalloc up.
        // SAFETY: a NUL-terminated name; nothing modifies the environment this early.
        if unsafe { getenv(env.as_ptr()) }.is_null() {
            // SAFETY: sets a process-wide allocator option before anything else runs; an option
            // set before mimalloc's own initialisation is kept.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

#[used]
#[link_section = ".init_array"]
static SET_ALLOCATOR_OPTIONS: extern "C" fn() = set_allocator_options;
