//! Attaching one hook: each program on its own, pinned when the guard must outlive the
//! daemon, and its outcome (or the kernel's reason) recorded on its status.

use super::*;

/// What attaching a hook came to, recorded on its (core) status.
pub(super) trait HookOutcome {
    fn settle(
        &mut self,
        disabled: bool,
        pins: &mut Option<Pins>,
        attach: impl FnOnce(Option<&Path>) -> Result<Option<PinnedLink>, AttachError>,
    );
    fn failed(&mut self, err: &(dyn std::error::Error + 'static));
}

impl HookOutcome for HookStatus {
    /// Records the outcome of one hook: disabled by the configuration, adopted from the
    /// pins of a previous daemon, attached (and pinned, with `pins`), or the kernel's
    /// reason for refusing it. `attach` gets the path to pin its link at.
    fn settle(
        &mut self,
        disabled: bool,
        pins: &mut Option<Pins>,
        attach: impl FnOnce(Option<&Path>) -> Result<Option<PinnedLink>, AttachError>,
    ) {
        if disabled {
            self.error = Some("disabled in the configuration".into());
            return;
        }
        if let Some(pins) = pins.as_mut() {
            if pins.adoptable.contains(&self.name) {
                match PinnedLink::from_pin(pins.link_path(&self.name)) {
                    Ok(link) => {
                        pins.links.push(link);
                        (self.attached, self.pinned, self.adopted) = (true, true, true);
                        return;
                    }
                    Err(err) => tracing::warn!(
                        "cannot adopt the pinned hook {}: {err}; attaching it anew",
                        self.name
                    ),
                }
            }
        }
        let pin_at = pins.as_ref().map(|p| p.link_path(&self.name));
        match attach(pin_at.as_deref()) {
            Ok(link) => {
                self.attached = true;
                if let (Some(link), Some(pins)) = (link, pins.as_mut()) {
                    pins.links.push(link);
                    self.pinned = true;
                }
            }
            Err(err) => self.failed(err.as_ref()),
        }
    }

    fn failed(&mut self, err: &(dyn std::error::Error + 'static)) {
        let (message, errno) = describe_error(err);
        self.error = Some(message);
        self.errno = errno;
    }
}

pub(super) type AttachError = Box<dyn std::error::Error + Send + Sync>;

/// The program `name` of the object, as its concrete type.
pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, AttachError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    Ok(prog.try_into()?)
}

/// The attached link taken out of its program and pinned at `pin`, when given; else the
/// link stays with its program (and ends with the daemon).
pub(super) fn pin_link(
    pin: Option<&Path>,
    take: impl FnOnce() -> Result<FdLink, AttachError>,
) -> Result<Option<PinnedLink>, AttachError> {
    let Some(path) = pin else {
        return Ok(None);
    };
    Ok(Some(take()?.pin(path)?))
}

pub(super) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    category: &str,
    name: &str,
    pin: Option<&Path>,
) -> Result<Option<PinnedLink>, AttachError> {
    let prog: &mut TracePoint = program(ebpf, name)?;
    prog.load()?;
    let link = prog.attach(category, name)?;
    // Before BPF perf links (Linux 5.15) a tracepoint's link is a perf event fd, which
    // cannot be pinned: it stays with the daemon.
    let pin = pin.filter(|_| aya::features().bpf_perf_link());
    pin_link(pin, || Ok(FdLink::try_from(prog.take_link(link)?)?))
}

/// An fentry program `name` on the kernel function `function`.
pub(super) fn attach_fentry(
    ebpf: &mut Ebpf,
    name: &str,
    function: &str,
    btf: &Btf,
    pin: Option<&Path>,
) -> Result<Option<PinnedLink>, AttachError> {
    let prog: &mut FEntry = program(ebpf, name)?;
    prog.load(function, btf)?;
    let link = prog.attach()?;
    pin_link(pin, || Ok(prog.take_link(link)?.into()))
}

/// An fexit program `name` on the kernel function `function`.
pub(super) fn attach_fexit(
    ebpf: &mut Ebpf,
    name: &str,
    function: &str,
    btf: &Btf,
    pin: Option<&Path>,
) -> Result<Option<PinnedLink>, AttachError> {
    let prog: &mut FExit = program(ebpf, name)?;
    prog.load(function, btf)?;
    let link = prog.attach()?;
    pin_link(pin, || Ok(prog.take_link(link)?.into()))
}

/// LSM programs are named after their hook.
pub(super) fn attach_lsm(
    ebpf: &mut Ebpf,
    hook: &str,
    btf: &Btf,
    pin: Option<&Path>,
) -> Result<Option<PinnedLink>, AttachError> {
    let prog: &mut Lsm = program(ebpf, hook)?;
    prog.load(hook, btf)?;
    let link = prog.attach()?;
    pin_link(pin, || Ok(prog.take_link(link)?.into()))
}

/// The whole error chain as one message, and the errno of the innermost io::Error.
pub fn describe_error(err: &(dyn std::error::Error + 'static)) -> (String, Option<String>) {
    let mut parts = Vec::new();
    let mut errno = None;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                errno = Some(crate::record::errno_name(code));
            }
        }
        current = e.source();
    }
    let mut message = parts.join(": ");
    // aya appends "Verifier output:" even when the kernel gave none (EPERM at load).
    let trimmed = message
        .trim_end()
        .trim_end_matches("Verifier output:")
        .trim_end();
    message.truncate(trimmed.trim_end_matches('.').len());
    if let Some(name) = &errno {
        if !message.contains(name.as_str()) {
            message = format!("{name}: {message}");
        }
    }
    (message, errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_names_the_errno() {
        let io = io::Error::from_raw_os_error(libc::EPERM);
        let (message, errno) = describe_error(&io);
        assert_eq!(errno.as_deref(), Some("EPERM"));
        assert!(
            message.starts_with("EPERM") || message.contains("EPERM"),
            "{message}"
        );
    }
}
