//! How a `struct page *` maps to its pfn on the running kernel, for the raw
//! `mm_page_alloc` program, whose argument is the page pointer and not the pfn.
//!
//! With CONFIG_SPARSEMEM_VMEMMAP (every x86_64 and arm64 distribution kernel) the
//! `struct page`s form one virtual array, `__page_to_pfn(page) = page - vmemmap`
//! (include/asm-generic/memory_model.h). Its base is randomized at boot
//! (`vmemmap_base`, CONFIG_RANDOMIZE_MEMORY) and `/proc/kallsyms` lists it only with
//! CONFIG_KALLSYMS_ALL (absent on this project's host kernel); `sizeof(struct page)`
//! depends on the config. So both are measured instead: the agent's calibrating
//! thread faults in single pages, the program records each page pointer
//! (`PAGE_CALIBRATION`), and `/proc/self/pagemap` (Documentation/admin-guide/mm/
//! pagemap.rst) gives the pfn the kernel itself put behind each address. Two samples
//! determine base and size; the others must agree, or the raw variant is not used.
use std::{fs::File, io, os::unix::fs::FileExt};

use aya::maps::{Array, MapData, MapError};
use numa_common::{PageCalibration, PageLayout};
use thiserror::Error;

/// Pages faulted in for one calibration.
const SAMPLES: usize = 8;
/// Samples that must fit the solved layout: an interrupt may allocate a page for
/// itself while the calibrating thread is `current`, so one stray sample is tolerated.
const MIN_AGREEING: usize = SAMPLES - 1;
/// `sizeof(struct page)` is 64 on common configs; anything outside this is a misfit.
const PAGE_STRUCT_SIZES: std::ops::RangeInclusive<u64> = 32..=256;

/// pagemap entry: bit 63 page present, bits 0-54 the pfn (zero without CAP_SYS_ADMIN).
const PM_PRESENT: u64 = 1 << 63;
const PM_PFN_MASK: u64 = (1 << 55) - 1;

#[derive(Debug, Error)]
pub enum CalibrationError {
    #[error("eBPF map PAGE_CALIBRATION")]
    Map(#[from] MapError),
    #[error("reading /proc/self/pagemap")]
    Pagemap(#[source] io::Error),
    #[error("mapping a calibration page")]
    Mmap(#[source] io::Error),
    #[error(
        "/proc/self/pagemap shows no page frame numbers (they need CAP_SYS_ADMIN), so the \
         page pointers cannot be checked"
    )]
    NoPfns,
    #[error("the program recorded no page for the calibrating thread's faults")]
    NoRecord,
    #[error(
        "no vmemmap layout fits the samples (page pointer, pfn): {0:x?}; this kernel may not \
         use a virtual memory map"
    )]
    NoFit(Vec<(u64, u64)>),
}

/// Fault in pages on this thread, pair each recorded page pointer with its pfn, and
/// solve for the layout. The raw program must be attached and the calling thread must
/// belong to the agent (its tgid is the programs' `agent_tgid`).
pub fn calibrate(
    slot: &mut Array<&mut MapData, PageCalibration>,
) -> Result<PageLayout, CalibrationError> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    slot.set(
        0,
        PageCalibration {
            tid,
            ..Default::default()
        },
        0,
    )?;
    let samples = collect(slot);
    slot.set(0, PageCalibration::default(), 0)?;
    let samples = samples?;
    solve(&samples).ok_or(CalibrationError::NoFit(samples))
}

fn collect(
    slot: &Array<&mut MapData, PageCalibration>,
) -> Result<Vec<(u64, u64)>, CalibrationError> {
    let pagemap = File::open("/proc/self/pagemap").map_err(CalibrationError::Pagemap)?;
    let mut samples = Vec::with_capacity(SAMPLES);
    // Every page stays mapped until all are sampled: a page freed in between would be
    // the next one handed out (the per-CPU free lists are LIFO), and samples of one
    // page say nothing about the spacing of `struct page`s.
    let mut held = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let page = FaultedPage::new()?;
        let recorded = slot.get(&0, 0)?.page;
        let mut entry = [0u8; 8];
        pagemap
            .read_exact_at(&mut entry, (page.addr() as u64 / page_bytes()) * 8)
            .map_err(CalibrationError::Pagemap)?;
        let entry = u64::from_ne_bytes(entry);
        let pfn = entry & PM_PFN_MASK;
        if entry & PM_PRESENT == 0 || pfn == 0 {
            return Err(CalibrationError::NoPfns);
        }
        if recorded == 0 {
            return Err(CalibrationError::NoRecord);
        }
        samples.push((recorded, pfn));
        held.push(page);
    }
    Ok(samples)
}

fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// One anonymous page, written once so the kernel allocates it (a VMA of one base page
/// is never backed by a huge page), unmapped on drop.
struct FaultedPage(*mut libc::c_void);

impl FaultedPage {
    fn new() -> Result<Self, CalibrationError> {
        let len = page_bytes() as usize;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(CalibrationError::Mmap(io::Error::last_os_error()));
        }
        // SAFETY: the mapping is writable and at least one byte long. The write is
        // volatile so it is not optimized away: it is the fault being measured.
        unsafe { ptr.cast::<u8>().write_volatile(1) };
        Ok(Self(ptr))
    }

    fn addr(&self) -> usize {
        self.0 as usize
    }
}

impl Drop for FaultedPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created.
        unsafe { libc::munmap(self.0, page_bytes() as usize) };
    }
}

/// The layout `page = vmemmap + pfn * page_size` that all but at most one sample fit,
/// from the first pair of samples that yields a plausible one.
pub fn solve(samples: &[(u64, u64)]) -> Option<PageLayout> {
    let fits = |l: &PageLayout| {
        samples
            .iter()
            .filter(|&&(page, pfn)| l.vmemmap.wrapping_add(pfn.wrapping_mul(l.page_size)) == page)
            .count()
    };
    let needed = MIN_AGREEING.min(samples.len()).max(2);
    for (i, &(page_a, pfn_a)) in samples.iter().enumerate() {
        for &(page_b, pfn_b) in &samples[i + 1..] {
            let (dp, dn) = (
                i128::from(page_b) - i128::from(page_a),
                i128::from(pfn_b) - i128::from(pfn_a),
            );
            if dn == 0 || dp % dn != 0 {
                continue;
            }
            let Ok(size) = u64::try_from(dp / dn) else {
                continue;
            };
            if !PAGE_STRUCT_SIZES.contains(&size) || size % 8 != 0 {
                continue;
            }
            let layout = PageLayout {
                vmemmap: page_a.wrapping_sub(pfn_a.wrapping_mul(size)),
                page_size: size,
            };
            if fits(&layout) >= needed {
                return Some(layout);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // A Debian-like randomized base and 64-byte pages.
    const BASE: u64 = 0xffff_d8c4_4000_0000;

    fn sample(pfn: u64) -> (u64, u64) {
        (BASE + pfn * 64, pfn)
    }

    #[test]
    fn solves_base_and_size_from_agreeing_samples() {
        let samples: Vec<_> = [
            0x0001_2345_u64,
            0x2_0000,
            0x1_0001,
            0x9_ffff,
            0x42,
            0x7777,
            0x3_0003,
            0x11,
        ]
        .into_iter()
        .map(sample)
        .collect();
        assert_eq!(
            solve(&samples),
            Some(PageLayout {
                vmemmap: BASE,
                page_size: 64
            })
        );
    }

    #[test]
    fn tolerates_one_stray_sample_even_first() {
        let mut samples: Vec<_> = (1..8u64).map(|i| sample(i * 1000 + 7)).collect();
        samples.insert(0, (BASE + 5 * 64 + 8, 77)); // an interrupt's page, wrong pfn
        assert_eq!(
            solve(&samples).map(|l| (l.vmemmap, l.page_size)),
            Some((BASE, 64))
        );
    }

    #[test]
    fn refuses_when_samples_disagree() {
        let samples: Vec<_> = (1..=8u64).map(|i| (BASE + i * i * 4096, i * 10)).collect();
        assert_eq!(solve(&samples), None);
        // Two stray samples are one too many.
        let mut samples: Vec<_> = (1..=6u64).map(|i| sample(i * 999)).collect();
        samples.extend([(BASE + 3, 5), (BASE + 11, 9)]);
        assert_eq!(solve(&samples), None);
    }

    #[test]
    fn other_struct_sizes() {
        let samples: Vec<_> = (1..=8u64).map(|i| (BASE + i * 31 * 80, i * 31)).collect();
        assert_eq!(solve(&samples).map(|l| l.page_size), Some(80));
    }
}
