//! The memory of this process as the kernel accounts it (`/proc/self/smaps_rollup`), to tell what a backend holds
//! of its own from what it shares with others.

/// Bytes of this process's memory, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Resident pages, shared ones counted in full.
    pub rss: u64,
    /// Resident pages, each shared page divided among the processes that map it.
    pub pss: u64,
    /// Resident pages mapped by this process only (Private_Clean + Private_Dirty). A file mapped by no other
    /// process counts here, though any process that maps it later would share it.
    pub private: u64,
    /// Resident pages mapped by other processes too (Shared_Clean + Shared_Dirty).
    pub shared: u64,
    /// Memory that belongs to no file (heap, stacks): this process's own, however many map the same files.
    pub anonymous: u64,
}

impl MemoryUsage {
    /// This process's usage; None where `/proc/self/smaps_rollup` cannot be read (not Linux, or before 4.14).
    pub fn of_this_process() -> Option<MemoryUsage> {
        std::fs::read_to_string("/proc/self/smaps_rollup").ok().map(|text| MemoryUsage::parse(&text))
    }

    fn parse(smaps_rollup: &str) -> MemoryUsage {
        let mut usage = MemoryUsage::default();
        for line in smaps_rollup.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value), Some("kB")) = (words.next(), words.next(), words.next()) else { continue };
            let Ok(kib) = value.parse::<u64>() else { continue };
            let bytes = kib * 1024;
            match key {
                "Rss:" => usage.rss += bytes,
                "Pss:" => usage.pss += bytes,
                "Private_Clean:" | "Private_Dirty:" => usage.private += bytes,
                "Shared_Clean:" | "Shared_Dirty:" => usage.shared += bytes,
                "Anonymous:" => usage.anonymous += bytes,
                _ => {}
            }
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_rollup() {
        let text = "55d0e0a8b000-7ffd6b9f2000 ---p 00000000 00:00 0                          [rollup]\n\
                    Rss:              524288 kB\nPss:              131072 kB\nPss_Anon:          10240 kB\n\
                    Shared_Clean:     491520 kB\nShared_Dirty:         0 kB\nPrivate_Clean:     2048 kB\n\
                    Private_Dirty:     30720 kB\nAnonymous:         10240 kB\nSwap:                  0 kB\n";
        let usage = MemoryUsage::parse(text);
        assert_eq!(usage.rss, 524288 * 1024);
        assert_eq!(usage.pss, 131072 * 1024);
        assert_eq!(usage.shared, 491520 * 1024);
        assert_eq!(usage.private, (2048 + 30720) * 1024);
        assert_eq!(usage.anonymous, 10240 * 1024);
        let here = MemoryUsage::of_this_process().expect("Linux has smaps_rollup");
        assert!(here.rss > 0 && here.rss >= here.private);
    }
}
