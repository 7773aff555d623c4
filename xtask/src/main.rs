//! Developer tasks for clockguard: `cargo xtask <setup|build|run|test|vm|package|bench>`.

#![forbid(unsafe_code)]

mod bench;
mod kernels;
mod package;
mod setup;
mod systemd_vm;
mod tasks;
mod util;
mod vm;
mod vmclock_vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "clockguard developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check the prerequisites (toolchains, bpf-linker, Debian packages, virtme-ng) and
    /// install only what is missing.
    Setup,
    /// Build clockguard (with its eBPF object) and the test helpers.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// setup, build --release, then run `clockguard run ARGS...` (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// setup, build, `cargo fmt --check` and `cargo clippy -D warnings`, unit tests, host
    /// suite, then the VM suite once per kernel (one boot each); a kernel × test table, and
    /// "N passed, M failed, K skipped" last.
    Test {
        /// Skip the VM suite (also: CLOCKGUARD_NO_VM=1). The run then ends FAILED, as an
        /// incomplete one; under CI (CI=true) it is refused, as are CG_TEST_FILTER and --kernel.
        #[arg(long)]
        no_vm: bool,
        /// Run the VM suite on this kernel only: a series of the matrix (6.1, 6.12, 7.2) or
        /// a kernel image path. Repeatable; default: every kernel of the matrix.
        #[arg(long = "kernel", value_name = "KERNEL")]
        kernels: Vec<String>,
        /// Skip the fuzz targets (cargo fuzz, nightly), which run by default for
        /// CG_FUZZ_SECONDS each (default 30): the NTP packet parser, the control socket's
        /// framing and requests, the NTS-KE records and the NTS extension fields. Refused
        /// under CI.
        #[arg(long)]
        no_fuzz: bool,
    },
    /// Boot the test VM once and run CMD in it (default `uname -a`) from the repo root.
    /// Env: CLOCKGUARD_VM_TIMEOUT (s, default 1800), CLOCKGUARD_VM_KERNEL (a series of the
    /// matrix, e.g. 6.12, or a kernel image path; default 6.1),
    /// CLOCKGUARD_VM_CPUS, CLOCKGUARD_VM_MEMORY.
    Vm {
        /// Boot the systemd test machine (a Debian 12 image with systemd as PID 1, built
        /// once under target/systemd-vm) instead of the host's own file system.
        #[arg(long)]
        systemd: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Run the vmclock suite (tests/vmclock) once: a guest of QEMU 10 with -device vmclock
    /// on the newest kernel with ptp_vmclock (7.2), saved to a file and restored from it
    /// when a test asks (a migration). The guest's console is the output.
    VmclockVm,
    /// Build the Debian package target/debian/clockguard_VERSION_amd64.deb (cargo-deb):
    /// binary, systemd unit, default configuration as a conffile, man pages, completions;
    /// lintian must find no error.
    Package,
    /// Build --release and run the benchmark rows; table on stdout, JSON in
    /// target/bench/results.json.
    Bench,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup => setup::setup(true, Some(&[])).map(|()| 0),
        Cmd::Build { release } => tasks::build(release).map(|()| 0),
        Cmd::Run { args } => tasks::run(&args).map(|()| 0),
        Cmd::Test {
            no_vm,
            kernels,
            no_fuzz,
        } => tasks::test(no_vm, &kernels, !no_fuzz),
        Cmd::Vm { systemd, cmd } => vm::vm(systemd, &cmd),
        Cmd::VmclockVm => vmclock_vm::vm(),
        Cmd::Package => setup::setup(false, None)
            .and_then(|()| package::package())
            .map(|_| 0),
        Cmd::Bench => bench::bench(),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}
