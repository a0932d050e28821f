//! Probes the agent can take off their hook and put back while it runs: the page-fault
//! sampler on its duty cycle, and the page-alloc probe during an allocation storm
//! (`crate::alloc_storm`). The program stays loaded; only its links come and go.
//!
//! Detaching all of a probe's links is what makes it free: the kernel turns the hook
//! itself off when its last user goes (the `perf_swevent_enabled` static key in
//! kernel/events/core.c, the tracepoint's static key in kernel/tracepoint.c), so the
//! traced path no longer pays even the dispatch.
use aya::{
    Ebpf,
    programs::{
        BtfTracePoint, PerfEvent, RawTracePoint, TracePoint, perf_event::PerfEventLinkId,
        raw_trace_point::RawTracePointLinkId, tp_btf::BtfTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};

use super::{SensorError, program_error, typed_program};

/// What a probe's program attaches to, for every variant it may have won with.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hook {
    /// The tracepoint (`category:event`) of the classic, raw and BTF variants.
    pub category: &'static str,
    pub event: &'static str,
    /// `perf_event` variant only: the program runs on every this many software
    /// page-fault events per CPU.
    pub sample_rate: u32,
}

/// One attachment of a program.
enum Links {
    /// One software page-fault counter per online CPU.
    Counters(Vec<PerfEventLinkId>),
    Btf(BtfTracePointLinkId),
    Raw(RawTracePointLinkId),
    Tracepoint(TracePointLinkId),
}

/// A loaded program, the variant it won with, and its links while attached.
pub(super) struct Switchable {
    variant: &'static str,
    program: &'static str,
    hook: Hook,
    /// `None` while detached.
    links: Option<Links>,
}

impl Switchable {
    /// Attach the loaded program `program` of `variant` to `hook`.
    pub fn attach(
        ebpf: &mut Ebpf,
        variant: &'static str,
        program: &'static str,
        hook: Hook,
    ) -> Result<Self, SensorError> {
        let links = attach_links(ebpf, variant, program, hook)?;
        Ok(Self {
            variant,
            program,
            hook,
            links: Some(links),
        })
    }

    /// Put the program on its hook (`true`) or take it off (`false`); a no-op when it
    /// already is so. On an error it stays off and the next call tries again.
    pub fn set(&mut self, ebpf: &mut Ebpf, on: bool) -> Result<(), SensorError> {
        match (on, self.links.take()) {
            (true, None) => {
                self.links = Some(attach_links(ebpf, self.variant, self.program, self.hook)?)
            }
            (false, Some(links)) => detach_links(ebpf, self.program, links)?,
            (_, links) => self.links = links,
        }
        Ok(())
    }
}

/// Load program `name` for `variant` (`perf_event`, `tp_btf`, `raw_tracepoint` or
/// the classic `tracepoint`); `tp_btf` needs the BTF type of `btf_event`.
pub(super) fn load_variant(
    ebpf: &mut Ebpf,
    variant: &str,
    name: &'static str,
    btf_event: &str,
) -> Result<(), SensorError> {
    let prog_err = program_error(name);
    match variant {
        "perf_event" => typed_program::<PerfEvent>(ebpf, name)?.load(),
        "tp_btf" => {
            let btf = aya::Btf::from_sys_fs()
                .map_err(|e| prog_err(aya::programs::ProgramError::Btf(e)))?;
            typed_program::<BtfTracePoint>(ebpf, name)?.load(btf_event, &btf)
        }
        "raw_tracepoint" => typed_program::<RawTracePoint>(ebpf, name)?.load(),
        _ => typed_program::<TracePoint>(ebpf, name)?.load(),
    }
    .map_err(prog_err)
}

/// Attach the loaded program of `variant`. For `perf_event`: one software page-fault
/// counter per online CPU, each running the program on every `sample_rate`-th fault
/// taken there; a CPU brought online later has no counter (its faults go unsampled
/// until the agent restarts); all or nothing, so a CPU whose counter cannot be opened
/// leaves no counter on the others.
fn attach_links(
    ebpf: &mut Ebpf,
    variant: &str,
    name: &'static str,
    hook: Hook,
) -> Result<Links, SensorError> {
    use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
    let prog_err = program_error(name);
    Ok(match variant {
        "perf_event" => {
            let cpus = aya::util::online_cpus()
                .map_err(|(_, e)| prog_err(aya::programs::ProgramError::IOError(e)))?;
            let program: &mut PerfEvent = typed_program(ebpf, name)?;
            let mut links = Vec::with_capacity(cpus.len());
            for cpu in cpus {
                let attached = program.attach(
                    PerfEventConfig::Software(SoftwareEvent::PageFaults),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(u64::from(hook.sample_rate.max(1))),
                    false,
                );
                match attached {
                    Ok(link) => links.push(link),
                    Err(e) => {
                        for link in links {
                            let _ = program.detach(link);
                        }
                        return Err(prog_err(e));
                    }
                }
            }
            Links::Counters(links)
        }
        "tp_btf" => Links::Btf(
            typed_program::<BtfTracePoint>(ebpf, name)?
                .attach()
                .map_err(prog_err)?,
        ),
        "raw_tracepoint" => Links::Raw(
            typed_program::<RawTracePoint>(ebpf, name)?
                .attach(hook.event)
                .map_err(prog_err)?,
        ),
        _ => Links::Tracepoint(
            typed_program::<TracePoint>(ebpf, name)?
                .attach(hook.category, hook.event)
                .map_err(prog_err)?,
        ),
    })
}

fn detach_links(ebpf: &mut Ebpf, name: &'static str, links: Links) -> Result<(), SensorError> {
    let prog_err = program_error(name);
    match links {
        Links::Counters(links) => {
            let program: &mut PerfEvent = typed_program(ebpf, name)?;
            // Every counter goes, even if one of them fails to.
            links
                .into_iter()
                .map(|link| program.detach(link))
                .fold(Ok(()), Result::and)
        }
        Links::Btf(link) => typed_program::<BtfTracePoint>(ebpf, name)?.detach(link),
        Links::Raw(link) => typed_program::<RawTracePoint>(ebpf, name)?.detach(link),
        Links::Tracepoint(link) => typed_program::<TracePoint>(ebpf, name)?.detach(link),
    }
    .map_err(prog_err)
}
