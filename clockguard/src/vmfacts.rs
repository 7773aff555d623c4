//! Facts about the machine's time sources that explain VM clock trouble: the hypervisor
//! (CPUID, DMI), the clocksource in use and the ones available, and the guest agents that
//! may set the clock (qemu-ga, VBoxService, vmtoolsd).

use std::{fs, path::Path};

pub use clockguard_core::status::VmFacts;

/// KVM_FEATURE_CLOCKSOURCE_STABLE_BIT in CPUID leaf 0x40000001 EAX.
const KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 24;

/// Hypervisor signatures of CPUID leaf 0x40000000 (EBX, ECX, EDX).
const CPUID_SIGNATURES: &[(&[u8; 12], &str)] = &[
    (b"KVMKVMKVM\0\0\0", "KVM"),
    (b"Microsoft Hv", "Hyper-V"),
    (b"VMwareVMware", "VMware"),
    (b"VBoxVBoxVBox", "VirtualBox"),
    (b"XenVMMXenVMM", "Xen"),
    (b"TCGTCGTCGTCG", "QEMU (TCG)"),
    (b"bhyve bhyve ", "bhyve"),
    (b"ACRNACRNACRN", "ACRN"),
    (b" lrpepyh  vr", "Parallels"),
];

/// DMI system vendors (and product names) of virtual machines.
const DMI_VENDORS: &[(&str, &str)] = &[
    ("QEMU", "QEMU"),
    ("innotek GmbH", "VirtualBox"),
    ("VMware, Inc.", "VMware"),
    ("Xen", "Xen"),
    ("Amazon EC2", "KVM (Amazon EC2)"),
    ("Google", "KVM (Google Compute Engine)"),
    ("Parallels Software International Inc.", "Parallels"),
    ("Microsoft Corporation|Virtual Machine", "Hyper-V"),
];

/// Guest agents (comm) that set the clock.
const TIME_AGENTS: &[&str] = &["qemu-ga", "VBoxService", "vmtoolsd"];

/// The hypervisor bit (CPUID.1:ECX[31]) and the vendor signature of leaf 0x40000000.
#[cfg(target_arch = "x86_64")]
fn cpuid_hypervisor() -> (bool, Option<[u8; 12]>) {
    use std::arch::x86_64::__cpuid;
    // Leaves beyond the CPU's maximum return zeros or the highest leaf's values, which
    // match no signature.
    let leaf1 = __cpuid(1);
    if leaf1.ecx & (1 << 31) == 0 {
        return (false, None);
    }
    let leaf = __cpuid(0x4000_0000);
    let mut signature = [0u8; 12];
    signature[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    signature[8..].copy_from_slice(&leaf.edx.to_le_bytes());
    (true, Some(signature))
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_hypervisor() -> (bool, Option<[u8; 12]>) {
    (false, None)
}

/// KVM's feature bits (CPUID leaf 0x40000001 EAX); only meaningful under KVM.
#[cfg(target_arch = "x86_64")]
fn cpuid_kvm_features() -> u32 {
    std::arch::x86_64::__cpuid(0x4000_0001).eax
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_kvm_features() -> u32 {
    0
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The hypervisor from what CPUID and DMI say.
pub fn identify(
    hypervisor_bit: bool,
    signature: Option<[u8; 12]>,
    dmi_vendor: Option<&str>,
    dmi_product: Option<&str>,
) -> Option<(String, &'static str)> {
    if let Some(sig) = signature {
        if let Some((_, name)) = CPUID_SIGNATURES.iter().find(|(s, _)| **s == sig) {
            return Some((name.to_string(), "cpuid 0x40000000"));
        }
    }
    let by_dmi = DMI_VENDORS.iter().find_map(|(pattern, name)| {
        let (vendor, product) = pattern.split_once('|').unwrap_or((pattern, ""));
        let vendor_matches = dmi_vendor.is_some_and(|v| v.starts_with(vendor));
        let product_matches = product.is_empty() || dmi_product.is_some_and(|p| p == product);
        (vendor_matches && product_matches).then_some(*name)
    });
    match (by_dmi, hypervisor_bit) {
        (Some(name), _) => Some((name.to_string(), "dmi")),
        (None, true) => Some((
            dmi_vendor.unwrap_or("unknown").to_string(),
            "cpuid hypervisor bit",
        )),
        (None, false) => None,
    }
}

/// Reads the facts under `sys` (/sys) and `proc` (/proc).
pub fn read(sys: &Path, proc: &Path) -> VmFacts {
    let dmi_vendor = read_trimmed(&sys.join("class/dmi/id/sys_vendor"));
    let dmi_product = read_trimmed(&sys.join("class/dmi/id/product_name"));
    let (bit, signature) = cpuid_hypervisor();
    let hypervisor = identify(
        bit,
        signature,
        dmi_vendor.as_deref(),
        dmi_product.as_deref(),
    );
    let clocksources = sys.join("devices/system/clocksource/clocksource0");
    VmFacts {
        hypervisor_evidence: hypervisor.as_ref().map(|(_, how)| how.to_string()),
        hypervisor: hypervisor.map(|(name, _)| name),
        dmi_vendor,
        dmi_product,
        clocksource: current_clocksource(sys),
        available_clocksources: read_trimmed(&clocksources.join("available_clocksource"))
            .map(|list| list.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        kvmclock_stable_bit: (signature == Some(*b"KVMKVMKVM\0\0\0"))
            .then(|| cpuid_kvm_features() & (1 << KVM_FEATURE_CLOCKSOURCE_STABLE_BIT) != 0),
        time_agents: crate::guard::process_comms(proc)
            .into_iter()
            .filter(|(_, comm)| TIME_AGENTS.contains(&comm.as_str()))
            .map(|(pid, comm)| format!("{comm} (pid {pid})"))
            .collect(),
    }
}

/// The clocksource the kernel's timekeeping reads now ("tsc", "kvm-clock", "hpet").
pub fn current_clocksource(sys: &Path) -> Option<String> {
    read_trimmed(&sys.join("devices/system/clocksource/clocksource0/current_clocksource"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_signature_wins_over_dmi() {
        let (name, how) = identify(true, Some(*b"KVMKVMKVM\0\0\0"), Some("QEMU"), None).unwrap();
        assert_eq!((name.as_str(), how), ("KVM", "cpuid 0x40000000"));
    }

    #[test]
    fn dmi_names_the_vm_without_a_signature() {
        // QEMU under TCG exposes no hypervisor leaf; its DMI still says QEMU.
        let (name, how) = identify(false, None, Some("QEMU"), Some("Standard PC")).unwrap();
        assert_eq!((name.as_str(), how), ("QEMU", "dmi"));
        let (name, _) = identify(
            false,
            None,
            Some("Microsoft Corporation"),
            Some("Virtual Machine"),
        )
        .unwrap();
        assert_eq!(name, "Hyper-V");
        // A Surface laptop is Microsoft hardware, not a VM.
        assert_eq!(
            identify(
                false,
                None,
                Some("Microsoft Corporation"),
                Some("Surface Pro")
            ),
            None
        );
    }

    #[test]
    fn an_unknown_hypervisor_is_still_a_vm() {
        let (name, how) = identify(true, Some(*b"NewHyperVisr"), None, None).unwrap();
        assert_eq!((name.as_str(), how), ("unknown", "cpuid hypervisor bit"));
        assert_eq!(identify(false, None, Some("Dell Inc."), None), None);
    }

    #[test]
    fn facts_from_a_fake_sys_and_proc() {
        let dir = std::env::temp_dir().join(format!("cg-vmfacts-{}", std::process::id()));
        let sys = dir.join("sys");
        let cs = sys.join("devices/system/clocksource/clocksource0");
        fs::create_dir_all(&cs).unwrap();
        fs::create_dir_all(sys.join("class/dmi/id")).unwrap();
        fs::write(cs.join("current_clocksource"), "kvm-clock\n").unwrap();
        fs::write(cs.join("available_clocksource"), "kvm-clock tsc acpi_pm \n").unwrap();
        fs::write(sys.join("class/dmi/id/sys_vendor"), "QEMU\n").unwrap();
        let proc = dir.join("proc");
        for (pid, comm) in [("312", "qemu-ga"), ("1", "systemd"), ("77", "vmtoolsd")] {
            fs::create_dir_all(proc.join(pid)).unwrap();
            fs::write(proc.join(pid).join("comm"), format!("{comm}\n")).unwrap();
        }
        let facts = read(&sys, &proc);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(facts.clocksource.as_deref(), Some("kvm-clock"));
        assert_eq!(
            facts.available_clocksources,
            ["kvm-clock", "tsc", "acpi_pm"]
        );
        let mut agents = facts.time_agents.clone();
        agents.sort();
        assert_eq!(agents, ["qemu-ga (pid 312)", "vmtoolsd (pid 77)"]);
        // This machine's own CPUID may name a hypervisor first; DMI says QEMU here.
        assert!(facts.hypervisor.is_some(), "{facts:?}");
    }
}
