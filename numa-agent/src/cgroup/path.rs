//! Pure parser: a cgroup path (as in `/proc/<pid>/cgroup`, relative to its hierarchy's
//! root) -> which Kubernetes pod / container / systemd unit it belongs to.
//!
//! Shapes recognised, from the code that creates them:
//! - kubelet, cgroupfs driver (pkg/kubelet/cm/cgroup_manager_linux.go, `CgroupName.ToCgroupfs`):
//!   `/kubepods/pod<uid>/<ctr>` (Guaranteed), `/kubepods/burstable/pod<uid>/<ctr>`,
//!   `/kubepods/besteffort/pod<uid>/<ctr>`; the container cgroup is the bare 64-hex id
//!   (containerd, dockershim) or `crio-<id>` / `crio-conmon-<id>` (CRI-O).
//! - kubelet, systemd driver (`CgroupName.ToSystemd`, which escapes `-` as `_`):
//!   `/kubepods.slice/kubepods-pod<uid_>.slice/..`, `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid_>.slice/..`, same for besteffort; containers as
//!   `cri-containerd-<id>.scope` (containerd), `crio-<id>.scope` (CRI-O; its monitor is
//!   `crio-conmon-<id>.scope`, which is *not* the container), `docker-<id>.scope`.
//! - A prefix before `kubepods` (kubelet `--cgroup-root`, kind's `/kubelet.slice/..`, a
//!   nested runtime) is allowed; anything below the container cgroup (CRI-O's
//!   `container` sub-cgroup on v2) still belongs to that container.
//! - Outside kubepods: docker without Kubernetes (`/system.slice/docker-<id>.scope`,
//!   `/docker/<id>`), and systemd units (`*.service`, `*.scope`).
//!
//! Anything else is [`WorkloadKind::Unattributed`]: a path never yields an id that is
//! not validated (pod UIDs are RFC 4122 text, container ids 64 lowercase hex).
use serde::Serialize;

/// Kubernetes QoS class, from the kubelet's cgroup level (pkg/kubelet/cm/qos_container_manager_linux.go).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

/// Container runtime, when the cgroup name says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::Crio => "crio",
            Self::Docker => "docker",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// A container of a pod (`pod_uid` and `container_id` set).
    PodContainer,
    /// A pod-level cgroup: the pod itself, CRI-O's conmon, or a child the parser does
    /// not recognise as a container (`pod_uid` set, `container_id` not).
    Pod,
    /// A container outside Kubernetes (`container_id` set).
    Container,
    /// A systemd unit that is not a pod (`unit` set).
    Unit,
    Unattributed,
}

/// What a cgroup path says about its workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CgroupAttribution {
    pub kind: WorkloadKind,
    /// Dashed, as the Kubernetes API writes it.
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// systemd unit name (`sshd.service`), for [`WorkloadKind::Unit`].
    pub unit: Option<String>,
}

impl CgroupAttribution {
    pub fn unattributed() -> Self {
        Self {
            kind: WorkloadKind::Unattributed,
            pod_uid: None,
            qos: None,
            container_id: None,
            runtime: None,
            unit: None,
        }
    }

    /// True when this names a pod or a container (the strongest attribution).
    pub fn is_container_or_pod(&self) -> bool {
        matches!(
            self.kind,
            WorkloadKind::PodContainer | WorkloadKind::Pod | WorkloadKind::Container
        )
    }
}

/// Parse a cgroup path. Never fails: unknown shapes are [`WorkloadKind::Unattributed`].
pub fn parse(path: &str) -> CgroupAttribution {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(i) = parts
        .iter()
        .position(|p| *p == "kubepods" || *p == "kubepods.slice")
    {
        return parse_kubepods(&parts[i + 1..], parts[i] == "kubepods.slice");
    }
    // Docker without Kubernetes: `docker-<id>.scope` (systemd driver) or `/docker/<id>`.
    for (i, part) in parts.iter().enumerate() {
        let id = part
            .strip_prefix("docker-")
            .and_then(|r| r.strip_suffix(".scope"))
            .or_else(|| {
                (*part == "docker")
                    .then(|| parts.get(i + 1).copied())
                    .flatten()
            });
        if let Some(id) = id.filter(|id| is_container_id(id)) {
            return CgroupAttribution {
                kind: WorkloadKind::Container,
                container_id: Some(id.to_owned()),
                runtime: Some(Runtime::Docker),
                ..CgroupAttribution::unattributed()
            };
        }
    }
    // The deepest systemd unit: `x.service` below `system.slice`, `session-3.scope`, ...
    if let Some(unit) = parts.iter().rev().find(|p| is_unit(p)) {
        return CgroupAttribution {
            kind: WorkloadKind::Unit,
            unit: Some((*unit).to_owned()),
            ..CgroupAttribution::unattributed()
        };
    }
    CgroupAttribution::unattributed()
}

fn is_unit(name: &str) -> bool {
    [".service", ".scope"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|stem| !stem.is_empty() && !stem.contains('/'))
    })
}

/// `parts` follow the `kubepods` / `kubepods.slice` component.
fn parse_kubepods(parts: &[&str], systemd: bool) -> CgroupAttribution {
    let (qos, rest) = match parts.first().copied() {
        Some("burstable" | "kubepods-burstable.slice") => (QosClass::Burstable, &parts[1..]),
        Some("besteffort" | "kubepods-besteffort.slice") => (QosClass::BestEffort, &parts[1..]),
        Some(_) => (QosClass::Guaranteed, parts),
        None => return CgroupAttribution::unattributed(),
    };
    let Some(pod) = rest.first() else {
        return CgroupAttribution::unattributed(); // a QoS level, no pod
    };
    let uid = if systemd {
        let prefix = match qos {
            QosClass::Guaranteed => "kubepods-pod",
            QosClass::Burstable => "kubepods-burstable-pod",
            QosClass::BestEffort => "kubepods-besteffort-pod",
        };
        // `-` separates levels in a systemd slice name: kubelet writes the UID with `_`.
        pod.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".slice"))
            .filter(|u| !u.contains('-'))
            .map(|u| u.replace('_', "-"))
    } else {
        pod.strip_prefix("pod").map(str::to_owned)
    };
    let Some(uid) = uid.filter(|u| is_pod_uid(u)) else {
        return CgroupAttribution::unattributed();
    };
    let pod_level = CgroupAttribution {
        kind: WorkloadKind::Pod,
        pod_uid: Some(uid),
        qos: Some(qos),
        ..CgroupAttribution::unattributed()
    };
    let Some(container) = rest.get(1) else {
        return pod_level;
    };
    match container_of(container) {
        Some((runtime, id)) => CgroupAttribution {
            kind: WorkloadKind::PodContainer,
            container_id: Some(id.to_owned()),
            runtime,
            ..pod_level
        },
        // crio-conmon-<id>, or a child we do not know: the pod, not a container.
        None => pod_level,
    }
}

/// The runtime and id a container cgroup name encodes; `None` for CRI-O's conmon
/// (the container's monitor process, not the container) and unknown names.
fn container_of(name: &str) -> Option<(Option<Runtime>, &str)> {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    if stem.starts_with("crio-conmon-") {
        return None;
    }
    let (runtime, id) = if let Some(id) = stem.strip_prefix("cri-containerd-") {
        (Some(Runtime::Containerd), id)
    } else if let Some(id) = stem.strip_prefix("crio-") {
        (Some(Runtime::Crio), id)
    } else if let Some(id) = stem.strip_prefix("docker-") {
        (Some(Runtime::Docker), id)
    } else {
        // cgroupfs driver with containerd or dockershim: the bare id, runtime not named.
        (None, stem)
    };
    is_container_id(id).then_some((runtime, id))
}

/// Container ids of containerd, CRI-O and docker: 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An RFC 4122 UUID in its 8-4-4-4-12 text form, as Kubernetes writes pod UIDs.
pub fn is_pod_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::{QosClass::*, Runtime::*, WorkloadKind::*, *};

    const UID: &str = "0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";
    const UID_: &str = "0f1e2d3c_4b5a_6978_8a9b_acbdcedf0011";
    const ID: &str = "3f5c1a2b4d6e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";

    struct Case {
        what: &'static str,
        path: String,
        kind: WorkloadKind,
        pod_uid: Option<&'static str>,
        qos: Option<QosClass>,
        container_id: Option<&'static str>,
        runtime: Option<Runtime>,
        unit: Option<&'static str>,
    }

    fn case(what: &'static str, path: String, kind: WorkloadKind) -> Case {
        Case {
            what,
            path,
            kind,
            pod_uid: None,
            qos: None,
            container_id: None,
            runtime: None,
            unit: None,
        }
    }

    fn pod(what: &'static str, path: String, qos: QosClass) -> Case {
        Case {
            pod_uid: Some(UID),
            qos: Some(qos),
            ..case(what, path, Pod)
        }
    }

    fn ctr(what: &'static str, path: String, qos: QosClass, runtime: Option<Runtime>) -> Case {
        Case {
            kind: PodContainer,
            container_id: Some(ID),
            runtime,
            ..pod(what, path, qos)
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            // kubelet cgroupfs driver (v1 controller hierarchies, or v2), every QoS class.
            ctr(
                "cgroupfs guaranteed",
                format!("/kubepods/pod{UID}/{ID}"),
                Guaranteed,
                None,
            ),
            ctr(
                "cgroupfs burstable",
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                Burstable,
                None,
            ),
            ctr(
                "cgroupfs besteffort",
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                BestEffort,
                None,
            ),
            ctr(
                "cgroupfs crio",
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                Burstable,
                Some(Crio),
            ),
            pod(
                "cgroupfs crio conmon is not the container",
                format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
                Burstable,
            ),
            pod(
                "cgroupfs pod level",
                format!("/kubepods/besteffort/pod{UID}"),
                BestEffort,
            ),
            pod(
                "cgroupfs guaranteed pod level",
                format!("/kubepods/pod{UID}"),
                Guaranteed,
            ),
            ctr(
                "cgroupfs under --cgroup-root",
                format!("/kubelet/kubepods/burstable/pod{UID}/{ID}"),
                Burstable,
                None,
            ),
            // kubelet systemd driver (hybrid name=systemd / unified, or pure v2).
            ctr(
                "systemd guaranteed containerd",
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                Guaranteed,
                Some(Containerd),
            ),
            ctr(
                "systemd burstable containerd",
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                Burstable,
                Some(Containerd),
            ),
            ctr(
                "systemd besteffort crio",
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"
                ),
                BestEffort,
                Some(Crio),
            ),
            ctr(
                "systemd crio v2 nested container",
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope/container"
                ),
                BestEffort,
                Some(Crio),
            ),
            pod(
                "systemd crio conmon is not the container",
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"
                ),
                Burstable,
            ),
            ctr(
                "systemd docker",
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"
                ),
                Burstable,
                Some(Docker),
            ),
            pod(
                "systemd pod level",
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
                ),
                Burstable,
            ),
            ctr(
                "kind node prefix",
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                Guaranteed,
                Some(Containerd),
            ),
            pod(
                "pod with an unknown child keeps the pod, no container",
                format!("/kubepods/burstable/pod{UID}/sandbox-helper"),
                Burstable,
            ),
            // Not pods.
            Case {
                container_id: Some(ID),
                runtime: Some(Docker),
                ..case(
                    "docker without k8s, systemd",
                    format!("/system.slice/docker-{ID}.scope"),
                    Container,
                )
            },
            Case {
                container_id: Some(ID),
                runtime: Some(Docker),
                ..case(
                    "docker without k8s, cgroupfs",
                    format!("/docker/{ID}"),
                    Container,
                )
            },
            Case {
                unit: Some("sshd.service"),
                ..case("systemd service", "/system.slice/sshd.service".into(), Unit)
            },
            Case {
                unit: Some("session-3.scope"),
                ..case(
                    "login session",
                    "/user.slice/user-1000.slice/session-3.scope".into(),
                    Unit,
                )
            },
            Case {
                unit: Some("containerd.service"),
                ..case(
                    "the runtime itself",
                    "/system.slice/containerd.service".into(),
                    Unit,
                )
            },
            // Unattributed: unknown shapes, and near-misses that must not yield an id.
            case("root", "/".into(), Unattributed),
            case("empty", String::new(), Unattributed),
            case(
                "sandbox cgroup of this host",
                "/process_api/3c7ddb01ea98d5e7ad290bc3d03792b8".into(),
                Unattributed,
            ),
            case("kubepods root", "/kubepods".into(), Unattributed),
            case("qos level only", "/kubepods/burstable".into(), Unattributed),
            case(
                "systemd qos slice only",
                "/kubepods.slice/kubepods-besteffort.slice".into(),
                Unattributed,
            ),
            case(
                "pod uid not a uuid",
                format!("/kubepods/burstable/podnot-a-uid/{ID}"),
                Unattributed,
            ),
            case(
                "systemd uid with dashes is not kubelet's",
                format!("/kubepods.slice/kubepods-pod{UID}.slice/cri-containerd-{ID}.scope"),
                Unattributed,
            ),
            case(
                "qos prefix mismatch",
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{UID_}.slice"
                ),
                Unattributed,
            ),
            case(
                "short uid",
                "/kubepods/pod0f1e2d3c-4b5a-6978-8a9b-acbdcedf001".into(),
                Unattributed,
            ),
            case(
                "docker id too short",
                "/docker/3f5c1a2b".into(),
                Unattributed,
            ),
            case("slice, no unit", "/system.slice".into(), Unattributed),
        ]
    }

    #[test]
    fn every_cgroup_shape() {
        let mut failures = Vec::new();
        for c in cases() {
            let got = parse(&c.path);
            let want = CgroupAttribution {
                kind: c.kind,
                pod_uid: c.pod_uid.map(str::to_owned),
                qos: c.qos,
                container_id: c.container_id.map(str::to_owned),
                runtime: c.runtime,
                unit: c.unit.map(str::to_owned),
            };
            if got != want {
                failures.push(format!(
                    "{}: {}\n  got  {got:?}\n  want {want:?}",
                    c.what, c.path
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn validators() {
        assert!(is_pod_uid(UID));
        assert!(!is_pod_uid(UID_));
        assert!(is_container_id(ID));
        assert!(!is_container_id(&ID.to_uppercase()));
    }
}
