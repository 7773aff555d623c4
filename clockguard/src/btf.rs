//! Minimal reader for the kernel's BTF (BPF Type Format, `/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF has no CO-RE relocations, so the daemon computes the byte offsets
//! of the struct members its BPF programs read (`task_struct.mm`,
//! `mm_struct.exe_file`, ...) here and hands them to the programs in a map.
//! Layout reference: the kernel's `include/uapi/linux/btf.h`.

use std::ops::Range;

use anyhow::{bail, Context, Result};

/// Path of the running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
/// Size in bytes of the fixed part of `struct btf_header`.
const HEADER_LEN: usize = 24;
/// Size in bytes of `struct btf_type`.
const TYPE_LEN: usize = 12;
/// Limit on modifier chains and anonymous-member nesting (guards against loops in corrupt BTF).
const MAX_DEPTH: usize = 64;
/// Limit on members visited by one lookup (guards against blow-up in corrupt BTF).
const MAX_VISITS: usize = 1 << 20;

const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_TYPEDEF: u8 = 8;
const KIND_FUNC_PROTO: u8 = 13;

/// One entry of the type section, keeping only what offset lookups need.
struct BtfType {
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    /// Size in bytes (INT, STRUCT, UNION, ...) or the referenced type id (PTR, TYPEDEF, ...).
    size_or_type: u32,
    /// INT encoding word: bits 0..8 = width in bits, bits 16..24 = bit offset; 0 for other kinds.
    int_data: u32,
    /// Index range into `KernelBtf::members`: STRUCT and UNION members, FUNC_PROTO
    /// parameters (`[name_off, type id, 0]`); empty for other kinds.
    members: Range<usize>,
}

/// The kernel's BTF type information, enough to find struct member offsets.
pub struct KernelBtf {
    strings: Vec<u8>,
    /// Type id `n` is at index `n - 1` (id 0 is void).
    types: Vec<BtfType>,
    /// Raw `struct btf_member`s: `[name_off, type id, offset]`. The offset is in bits; when the
    /// parent's kind_flag is set it is `(bitfield_size << 24) | bit_offset`.
    members: Vec<[u32; 3]>,
}

/// `len` bytes of `bytes` from byte offset `start`, if all present.
fn get(bytes: &[u8], start: usize, len: usize) -> Option<&[u8]> {
    bytes.get(start..start.checked_add(len)?)
}

/// Reads a native-endian u32 at byte offset `at`, bounds-checked.
fn read_u32(bytes: &[u8], at: usize) -> Result<u32> {
    match get(bytes, at, 4) {
        Some(&[a, b, c, d]) => Ok(u32::from_ne_bytes([a, b, c, d])),
        _ => bail!(
            "BTF truncated: no 4 bytes at offset {at} of {}",
            bytes.len()
        ),
    }
}

/// TYPEDEF, VOLATILE, CONST, RESTRICT and TYPE_TAG: kinds that just refer to another type.
fn is_modifier(kind: u8) -> bool {
    matches!(kind, 8..=11 | 18)
}

impl KernelBtf {
    /// Parses raw BTF (the format of /sys/kernel/btf/vmlinux, in native byte order).
    pub fn parse(bytes: &[u8]) -> Result<KernelBtf> {
        let Some(&[m0, m1, version, _flags]) = bytes.get(..4) else {
            bail!("BTF truncated: {} bytes, no header", bytes.len());
        };
        let magic = u16::from_ne_bytes([m0, m1]);
        if magic == BTF_MAGIC.swap_bytes() {
            bail!("BTF has byte-swapped magic {magic:#06x}: foreign-endian BTF is unsupported");
        }
        if magic != BTF_MAGIC {
            bail!("not BTF data: magic {magic:#06x}, expected {BTF_MAGIC:#06x}");
        }
        if version != 1 {
            bail!("unsupported BTF version {version} (expected 1)");
        }
        // Header fields are in bytes; section offsets count from the end of the header.
        let hdr_len = read_u32(bytes, 4)? as usize;
        if !(HEADER_LEN..=bytes.len()).contains(&hdr_len) {
            bail!(
                "bad BTF header length {hdr_len} (blob is {} bytes)",
                bytes.len()
            );
        }
        let section = |at: usize, what: &str| -> Result<&[u8]> {
            let off = hdr_len.saturating_add(read_u32(bytes, at)? as usize);
            let len = read_u32(bytes, at + 4)? as usize;
            get(bytes, off, len).with_context(|| format!("BTF {what} section is out of bounds"))
        };
        let type_sec = section(8, "type")?;
        let strings = section(16, "string")?.to_vec();

        let (mut types, mut members) = (Vec::new(), Vec::new());
        let mut pos = 0;
        while pos < type_sec.len() {
            let id = types.len() + 1;
            let word =
                |i: usize| read_u32(type_sec, pos + 4 * i).with_context(|| format!("type id {id}"));
            let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            pos += TYPE_LEN;
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as usize;
            // Bytes of kind-specific data following `struct btf_type`.
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, modifiers, FUNC, FLOAT, TYPE_TAG
                _ => bail!("unknown BTF kind {kind} at type id {id}"),
            };
            let data = get(type_sec, pos, extra)
                .with_context(|| format!("BTF type id {id} (kind {kind}) truncated"))?;
            pos += extra;
            let first = members.len();
            if kind == KIND_STRUCT || kind == KIND_UNION {
                for m in data.chunks_exact(12) {
                    members.push([read_u32(m, 0)?, read_u32(m, 4)?, read_u32(m, 8)?]);
                }
            }
            if kind == KIND_FUNC_PROTO {
                for p in data.chunks_exact(8) {
                    members.push([read_u32(p, 0)?, read_u32(p, 4)?, 0]);
                }
            }
            let kind_flag = info >> 31 == 1;
            let int_data = if kind == KIND_INT {
                read_u32(data, 0)?
            } else {
                0
            };
            let members = first..members.len();
            let t = BtfType {
                name_off,
                kind,
                kind_flag,
                size_or_type,
                int_data,
                members,
            };
            types.push(t);
        }
        Ok(KernelBtf {
            strings,
            types,
            members,
        })
    }

    /// Reads and parses /sys/kernel/btf/vmlinux; the error names the path.
    pub fn from_sys() -> Result<KernelBtf> {
        let bytes = std::fs::read(VMLINUX_BTF).with_context(|| format!("reading {VMLINUX_BTF}"))?;
        KernelBtf::parse(&bytes).with_context(|| format!("parsing {VMLINUX_BTF}"))
    }

    /// Byte offset of `member` inside `struct struct_name`, looking through anonymous
    /// struct/union members recursively (their offsets are added). Bitfields and members
    /// not at a whole byte are refused.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32> {
        let st = self.find_struct(struct_name)?;
        let mut budget = MAX_VISITS;
        let Some((bits, bitfield)) = self.find_member(st, member, 0, &mut budget)? else {
            bail!("struct {struct_name} has no member {member}");
        };
        if bitfield != 0 {
            let what = format!("{bitfield} bits at bit offset {bits}");
            bail!("struct {struct_name} member {member} is a bitfield ({what})");
        }
        if bits % 8 != 0 {
            bail!("struct {struct_name} member {member} is at bit {bits}, not byte-aligned");
        }
        Ok(bits / 8)
    }

    /// Whether argument `index` (from 0, after the tracepoint's own `void *__data`) of the
    /// BTF tracepoint `name` is a pointer, from the kernel's `btf_trace_<name>` typedef.
    /// Tracepoint prototypes change between releases: `hrtimer_expire_entry` passes `now`
    /// as `ktime_t *` on 6.1 and 6.12, as `ktime_t` on 7.2.
    pub fn tracepoint_arg_is_pointer(&self, name: &str, index: usize) -> Result<bool> {
        let typedef = format!("btf_trace_{name}");
        let td = (self.types.iter())
            .find(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off).ok() == Some(&typedef))
            .with_context(|| format!("no typedef {typedef} in the kernel BTF"))?;
        let ptr = self.skip_modifiers(td.size_or_type)?;
        let proto = match ptr.kind {
            KIND_PTR => self.skip_modifiers(ptr.size_or_type)?,
            _ => ptr,
        };
        if proto.kind != KIND_FUNC_PROTO {
            bail!("{typedef} is not a pointer to a function prototype");
        }
        let params = &self.members[proto.members.clone()];
        let [_, type_id, _] = params.get(index + 1).with_context(|| {
            format!(
                "{typedef} has {} arguments, no argument {index}",
                params.len() - 1
            )
        })?;
        Ok(self.skip_modifiers(*type_id)?.kind == KIND_PTR)
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32> {
        Ok(self.find_struct(name)?.size_or_type)
    }

    /// The first STRUCT named `name` with a non-zero size.
    fn find_struct(&self, name: &str) -> Result<&BtfType> {
        let wanted = |t: &&BtfType| {
            t.kind == KIND_STRUCT && t.size_or_type != 0 && self.name(t.name_off).ok() == Some(name)
        };
        (self.types.iter().find(wanted))
            .with_context(|| format!("no struct named {name} in the kernel BTF"))
    }

    /// The NUL-terminated string at byte offset `off` of the string section.
    fn name(&self, off: u32) -> Result<&str> {
        let rest = (self.strings.get(off as usize..))
            .with_context(|| format!("BTF name offset {off} outside the string section"))?;
        let len = (rest.iter().position(|&c| c == 0))
            .with_context(|| format!("BTF name at offset {off} is not NUL-terminated"))?;
        std::str::from_utf8(&rest[..len])
            .with_context(|| format!("BTF name at offset {off} is not UTF-8"))
    }

    fn ty(&self, id: u32) -> Result<&BtfType> {
        ((id as usize).checked_sub(1).and_then(|i| self.types.get(i)))
            .with_context(|| format!("BTF refers to missing type id {id}"))
    }

    /// The type `id` refers to once TYPEDEF/CONST/VOLATILE/RESTRICT/TYPE_TAG are skipped.
    fn skip_modifiers(&self, mut id: u32) -> Result<&BtfType> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            if !is_modifier(t.kind) {
                return Ok(t);
            }
            id = t.size_or_type;
        }
        bail!("BTF modifier chain reaching type id {id} is too long (loop?)")
    }

    /// Looks `member` up in struct/union `t`: `(bit offset, bitfield width in bits or 0)`.
    fn find_member(
        &self,
        t: &BtfType,
        member: &str,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Option<(u32, u32)>> {
        if depth > MAX_DEPTH {
            bail!("BTF anonymous members nested too deep (loop?)");
        }
        for &[name_off, type_id, offset] in &self.members[t.members.clone()] {
            *budget = (budget.checked_sub(1)).context("BTF lookup visits too many members")?;
            let (bits, mut bitfield) = match t.kind_flag {
                true => (offset & 0xff_ffff, offset >> 24),
                false => (offset, 0),
            };
            if name_off != 0 && self.name(name_off)? != member {
                continue;
            }
            let mt = self.skip_modifiers(type_id)?;
            if name_off != 0 {
                // Without kind_flag, a bitfield is an INT narrower than its size or bit-offset.
                let (int_bits, int_off) = (mt.int_data & 0xff, (mt.int_data >> 16) & 0xff);
                let full = u64::from(int_bits) == u64::from(mt.size_or_type) * 8;
                if bitfield == 0 && mt.kind == KIND_INT && (int_off != 0 || !full) {
                    bitfield = int_bits;
                }
                return Ok(Some((bits, bitfield)));
            }
            if mt.kind == KIND_STRUCT || mt.kind == KIND_UNION {
                if let Some((sub, bf)) = self.find_member(mt, member, depth + 1, budget)? {
                    let total = bits.checked_add(sub).context("BTF bit offset overflows")?;
                    return Ok(Some((total, bf)));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A struct/union member for the builder: `(name, type id, offset word)`.
    type Member<'a> = (&'a str, u32, u32);

    /// Builds a BTF blob by hand (native byte order): types as u32 words, then strings.
    #[derive(Default)]
    struct Builder {
        words: Vec<u32>,
        strings: Vec<u8>,
        ids: u32,
    }

    impl Builder {
        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend(s.bytes().chain([0]));
            off
        }
        /// Appends a `struct btf_type` (trailing data is up to the caller); returns its id.
        fn ty(&mut self, kind: u32, name: &str, kflag: bool, vlen: u32, size: u32) -> u32 {
            let info = u32::from(kflag) << 31 | kind << 24 | vlen;
            let name = self.str(name);
            self.words.extend([name, info, size]);
            self.ids += 1;
            self.ids
        }
        fn int(&mut self, name: &str, size: u32, bits: u32) -> u32 {
            let id = self.ty(1, name, false, 0, size);
            self.words.push(bits);
            id
        }
        /// STRUCT (4) or UNION (5).
        fn agg(&mut self, kind: u32, name: &str, kf: bool, size: u32, ms: &[Member]) -> u32 {
            let id = self.ty(kind, name, kf, ms.len() as u32, size);
            for &(n, t, off) in ms {
                let n = self.str(n);
                self.words.extend([n, t, off]);
            }
            id
        }
        fn build(&self) -> Vec<u8> {
            let (tl, sl) = (self.words.len() as u32 * 4, self.strings.len() as u32);
            let mut out = [BTF_MAGIC.to_ne_bytes(), [1, 0]].concat();
            for w in [HEADER_LEN as u32, 0, tl, tl, sl].iter().chain(&self.words) {
                out.extend(w.to_ne_bytes());
            }
            out.extend(&self.strings);
            out
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder {
            strings: vec![0],
            ..Default::default()
        };
        b.ty(7, "outer", false, 0, 0); // FWD outer
        b.agg(4, "outer", false, 0, &[]); // zero-size decoy
        let int = b.int("int", 4, 32);
        let long = b.int("long", 8, 64);
        let narrow = b.int("unsigned int", 4, 3); // old-style (no kind_flag) bitfield
        let inner = b.agg(4, "inner", false, 8, &[("a", int, 0), ("b", int, 32)]);
        let anon_union = b.agg(5, "", false, 8, &[("u1", int, 0), ("in", inner, 0)]);
        let anon_struct = b.agg(4, "", false, 8, &[("s1", int, 0), ("s2", int, 32)]);
        let const_anon = b.ty(10, "", false, 0, anon_struct);
        let outer = [
            ("x", long, 0),
            ("", anon_union, 64),
            ("tail", int, 128),
            ("flags", int, 3 << 24 | 160),
            ("", const_anon, 192),
            ("odd", int, 260),
        ];
        b.agg(4, "outer", true, 40, &outer);
        b.agg(4, "plain", false, 8, &[("bf", narrow, 0), ("c", int, 32)]);
        b.build()
    }

    #[test]
    fn tracepoint_prototypes_by_value_or_by_pointer() {
        let mut b = Builder {
            strings: vec![0],
            ..Default::default()
        };
        let long = b.int("long long", 8, 64);
        let ktime = b.ty(8, "ktime_t", false, 0, long); // TYPEDEF
        let ktime_ptr = b.ty(2, "", false, 0, ktime); // PTR
        let void_ptr = b.ty(2, "", false, 0, 0);
        // void (*)(void *__data, struct hrtimer *, ktime_t *now): 6.1 and 6.12.
        let old = b.ty(13, "", false, 3, 0);
        b.words.extend([0, void_ptr, 0, void_ptr, 0, ktime_ptr]);
        let old_ptr = b.ty(2, "", false, 0, old);
        b.ty(8, "btf_trace_old_entry", false, 0, old_ptr);
        // ... ktime_t now: 7.2.
        let new = b.ty(13, "", false, 3, 0);
        b.words.extend([0, void_ptr, 0, void_ptr, 0, ktime]);
        let new_ptr = b.ty(2, "", false, 0, new);
        b.ty(8, "btf_trace_new_entry", false, 0, new_ptr);
        let btf = KernelBtf::parse(&b.build()).unwrap();
        assert!(btf.tracepoint_arg_is_pointer("old_entry", 0).unwrap());
        assert!(btf.tracepoint_arg_is_pointer("old_entry", 1).unwrap());
        assert!(!btf.tracepoint_arg_is_pointer("new_entry", 1).unwrap());
        let err = format!(
            "{:#}",
            btf.tracepoint_arg_is_pointer("new_entry", 2).unwrap_err()
        );
        assert!(err.contains("has 2 arguments"), "{err}");
        assert!(btf.tracepoint_arg_is_pointer("gone", 0).is_err());
    }

    #[test]
    fn offsets_in_hand_built_btf() {
        let btf = KernelBtf::parse(&sample()).unwrap();
        let off = |s, m| btf.member_offset(s, m).unwrap();
        let err = |s, m| format!("{:#}", btf.member_offset(s, m).unwrap_err());
        assert_eq!(btf.struct_size("outer").unwrap(), 40);
        assert_eq!(off("outer", "x"), 0);
        assert_eq!(off("outer", "u1"), 8, "through the anonymous union");
        assert_eq!(off("outer", "in"), 8);
        assert_eq!(off("outer", "tail"), 16);
        assert_eq!(off("outer", "s2"), 28, "through the anonymous const struct");
        assert_eq!(off("inner", "b"), 4);
        assert_eq!(off("plain", "c"), 4);
        // "b" sits in the named member "in": only anonymous members are descended.
        assert_eq!(err("outer", "b"), "struct outer has no member b");
        assert_eq!(err("outer", "nope"), "struct outer has no member nope");
        assert_eq!(err("foo", "x"), "no struct named foo in the kernel BTF");
        assert!(err("outer", "flags").contains("struct outer member flags is a bitfield"));
        assert!(err("plain", "bf").contains("is a bitfield"));
        assert!(err("outer", "odd").contains("not byte-aligned"));
    }

    #[test]
    fn corrupt_btf_never_panics() {
        let blob = sample();
        for len in 0..blob.len() {
            assert!(
                KernelBtf::parse(&blob[..len]).is_err(),
                "{len}-byte prefix parsed"
            );
        }
        // Every type-section length, and every byte replaced by a few values: no panic or hang.
        let mut variants = Vec::new();
        for type_len in 0..read_u32(&blob, 12).unwrap() {
            variants.push(blob.clone());
            variants.last_mut().unwrap()[12..16].copy_from_slice(&type_len.to_ne_bytes());
        }
        for i in 0..blob.len() {
            for byte in [0, 1, 0x13, 0x7f, 0xff] {
                variants.push(blob.clone());
                variants.last_mut().unwrap()[i] = byte;
            }
        }
        for btf in variants.iter().filter_map(|v| KernelBtf::parse(v).ok()) {
            for (s, m) in [("outer", "s2"), ("outer", "b"), ("plain", "bf")] {
                let _ = (btf.member_offset(s, m), btf.struct_size(s));
            }
        }
        let swapped = [&[blob[1], blob[0]], &blob[2..]].concat();
        let err = format!("{:#}", KernelBtf::parse(&swapped).err().unwrap());
        assert!(err.contains("byte-swapped"), "{err}");
    }

    #[test]
    fn offsets_in_running_kernel() {
        let btf = KernelBtf::from_sys().expect("this test needs /sys/kernel/btf/vmlinux");
        let wanted = [
            ("task_struct", "mm"),
            ("mm_struct", "exe_file"),
            ("file", "f_inode"),
            ("inode", "i_ino"),
            ("inode", "i_sb"),
            ("super_block", "s_dev"),
        ];
        for (s, m) in wanted {
            let off = btf.member_offset(s, m).unwrap();
            let size = btf.struct_size(s).unwrap();
            eprintln!("{s}.{m}: offset {off} bytes (struct is {size} bytes)");
            assert!(
                off + 4 <= size,
                "{s}.{m} at {off} is past the {size}-byte struct"
            );
        }
        let off = |m| btf.member_offset("inode", m).unwrap();
        assert_ne!(off("i_ino"), off("i_sb"));
    }
}
