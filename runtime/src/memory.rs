//! The process's own memory, as the kernel counts it, for exit summaries and memory tests.

/// The peak resident set size of this process so far (Linux `VmHWM`), in bytes; `None` where
/// `/proc/self/status` does not say it.
pub fn peak_resident_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// The resident set size of this process now (Linux `VmRSS`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix(field))?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_peak_covers_what_this_process_touched() {
        let block = vec![1u8; 64 << 20];
        // Now first: the peak read after it can only be as high or higher.
        let now = super::resident_bytes().expect("Linux reports VmRSS");
        let peak = super::peak_resident_bytes().expect("Linux reports VmHWM");
        assert!(peak >= block.len() as u64, "peak {peak} below the 64 MiB just touched");
        assert!(now >= block.len() as u64 && now <= peak, "resident {now}, peak {peak}");
        assert_eq!(block.iter().map(|&b| b as u64).sum::<u64>(), block.len() as u64);
    }
}
