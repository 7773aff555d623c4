//! Processes: fork and exec record who each process is (for attribution after it
//! exits), tracked services' processes are followed through fork, and their exits are
//! reported with the wait status.

use super::*;

/// Reads a tracepoint `__data_loc` field: a u32 whose low 16 bits are the offset of the
/// data from the start of the record.
#[inline(always)]
fn data_loc(ctx: &TracePointContext, field_offset: usize) -> Option<*const u8> {
    let loc = unsafe { ctx.read_at::<u32>(field_offset) }.ok()?;
    Some(unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) })
}

/// Processes of tracked services (`[[service]]`): tgid → service index. The daemon adds
/// the processes it matched; fork adds their children at once (a new worker is tracked
/// before it can die); exit removes them. Thread ids of tracked processes pass through
/// too (fork cannot tell a thread from a process here) and leave at the thread's exit.
#[map]
static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Exits of tracked processes, with their wait status.
#[map]
static SERVICE_EVENTS: RingBuf = RingBuf::with_byte_size(64 << 10, 0);

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.flags & CONFIG_PROCINFO_LAYOUT == 0 {
        return 0;
    }
    let Ok(child_pid) = (unsafe { ctx.read_at::<i32>(cfg.fork_child_pid_offset as usize) }) else {
        return 0;
    };
    let child = child_pid as u32;
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(&service) = unsafe { TRACKED.get(&parent) } {
        if TRACKED.insert(&child, &service, BPF_ANY as u64).is_err() {
            count(COUNTER_TRACKED_FULL);
        }
    }
    let Some(zero) = ZERO_PROC.get_ptr(0) else {
        return 0;
    };
    if PROCS
        .insert(child, unsafe { &*zero }, BPF_ANY as u64)
        .is_err()
    {
        return 0;
    }
    let Some(info) = PROCS.get_ptr_mut(child) else {
        return 0;
    };
    let info = unsafe { &mut *info };
    // The tracepoint runs in the forking task: its tgid is what a user calls the parent
    // (the event's parent_pid is the forking thread's tid).
    info.ppid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let comm_src = if cfg.fork_parent_comm_dataloc != 0 {
        data_loc(&ctx, cfg.fork_parent_comm_offset as usize)
    } else {
        Some(unsafe { (ctx.as_ptr() as *const u8).add(cfg.fork_parent_comm_offset as usize) })
    };
    if let Some(src) = comm_src {
        unsafe {
            generated::bpf_probe_read_kernel_str(
                info.parent_comm.as_mut_ptr() as *mut c_void,
                COMM_LEN as u32,
                src as *const c_void,
            )
        };
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.flags & CONFIG_PROCINFO_LAYOUT == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if PROCS.get_ptr_mut(tgid).is_none() {
        // Forked before we attached: start an entry without a parent.
        let Some(zero) = ZERO_PROC.get_ptr(0) else {
            return 0;
        };
        if PROCS
            .insert(tgid, unsafe { &*zero }, BPF_ANY as u64)
            .is_err()
        {
            return 0;
        }
    }
    let Some(info) = PROCS.get_ptr_mut(tgid) else {
        return 0;
    };
    let info = unsafe { &mut *info };
    if let Some(src) = data_loc(&ctx, cfg.exec_filename_offset as usize) {
        let n = unsafe {
            generated::bpf_probe_read_kernel_str(
                info.exe.as_mut_ptr() as *mut c_void,
                EXE_LEN as u32,
                src as *const c_void,
            )
        };
        if n > 0 {
            info.has_exe = 1;
        }
    }
    0
}

/// Every task exit costs two lookups (PENDING, TRACKED); a tracked process's exit becomes a
/// ServiceExitEvent with its wait status (`exit_code` is set by do_exit before this
/// tracepoint; a group exit gives every thread the group's code).
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // The thread's reused pending entry, if it ever made a clock syscall: a call whose
    // exit hook the kernel skipped is sent now. Looked up first: a delete takes the
    // bucket lock even for a key that is not there.
    if let Some(pending) = PENDING.get_ptr_mut(&tid) {
        super::audit::send_unfinished(unsafe { &mut *pending });
        let _ = PENDING.remove(&tid);
    }
    let Some(&service) = (unsafe { TRACKED.get(&tid) }) else {
        return 0;
    };
    let _ = TRACKED.remove(&tid);
    if tid != tgid {
        // A thread of a tracked process: the process lives on.
        return 0;
    }
    // Built in the ring buffer itself: 176 bytes are too many for the BPF stack once
    // zero-filled (bpf-linker rejects large stack memsets).
    let Some(mut slot) = SERVICE_EVENTS.reserve::<ServiceExitEvent>(0) else {
        count(COUNTER_SERVICE_EXIT_DROPS);
        return 0;
    };
    let event = unsafe { &mut *slot.as_mut_ptr() };
    event.mono_ns = unsafe { generated::bpf_ktime_get_ns() };
    event.tgid = tgid;
    event.service = service;
    // Volatile: LLVM would merge the zero stores into a memset, which BPF cannot call.
    unsafe {
        core::ptr::write_volatile(&mut event.exit_code, 0);
        core::ptr::write_volatile(&mut event.flags, 0);
        core::ptr::write_volatile(&mut event.ppid, 0);
        core::ptr::write_volatile(&mut event._pad, 0);
    }
    unsafe {
        generated::bpf_get_current_comm(event.comm.as_mut_ptr() as *mut c_void, COMM_LEN as u32)
    };
    if let Some(info) = unsafe { PROCS.get(tgid) } {
        event.ppid = info.ppid;
        event.flags |= SERVICE_EXIT_HAS_PROCINFO;
        if info.has_exe != 0 {
            copy_words(&mut event.exe, &info.exe);
            event.flags |= SERVICE_EXIT_HAS_EXE;
        }
    }
    if let Some(cfg) = config() {
        if cfg.flags & CONFIG_EXIT_CODE_LAYOUT != 0 {
            let task = unsafe { generated::bpf_get_current_task() };
            if let Some(code) = read_kernel::<i32>(task, cfg.task_exit_code_offset as u32) {
                event.exit_code = code;
                event.flags |= SERVICE_EXIT_HAS_CODE;
            }
        }
    }
    slot.submit(0);
    0
}
