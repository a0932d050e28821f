// An empty library: numa-agent's build script depends on this crate so that cargo
// rebuilds the agent when the eBPF sources change (see aya-build's `build_ebpf`).
#![no_std]
