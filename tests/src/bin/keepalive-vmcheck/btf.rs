//! The kernel's BTF, read by hand (from the format in Documentation/bpf/btf.rst)
//! rather than through the daemon's resolver: the few facts the expectation needs,
//! and the doctored copy that pushes the daemon onto its tracepoint fallbacks.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use super::fact;

/// The few BTF facts the expectation needs.
#[derive(Default)]
pub struct BtfFacts {
    /// FUNC name -> (BTF type id, parameter names).
    pub funcs: BTreeMap<String, (u32, Vec<String>)>,
    /// Enumerator name -> value.
    pub enumerators: BTreeMap<String, i64>,
    /// "struct.member" -> byte offsets (top-level members of a few structs; every
    /// struct of that name, to see duplicates).
    pub members: BTreeMap<String, Vec<u32>>,
}

const STRUCTS_OF_INTEREST: [(&str, &str); 3] = [
    ("sock", "sk_timer"),
    ("inet_connection_sock", "icsk_keepalive_timer"),
    ("inet_connection_sock", "icsk_probes_out"),
];

const FUNCS_OF_INTEREST: [&str; 4] = [
    "tcp_write_wakeup",
    "tcp_send_active_reset",
    "sk_error_report",
    "tcp_reset",
];

/// A BTF blob: its bytes and its string section.
struct Blob<'a> {
    data: &'a [u8],
    strings: &'a [u8],
}

impl Blob<'_> {
    fn u32_at(&self, off: usize) -> Result<u32, String> {
        u32_at(self.data, off)
    }

    fn name(&self, off: u32) -> String {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    }
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, String> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| format!("BTF truncated at {off}"))
}

/// One type record: its header words and where its kind-specific data starts.
struct TypeRecord {
    id: u32,
    name_off: u32,
    info: u32,
    size_or_type: u32,
    vlen: usize,
    kind: u32,
    body: usize,
}

impl TypeRecord {
    fn read(blob: &Blob<'_>, id: u32, pos: usize) -> Result<TypeRecord, String> {
        let info = blob.u32_at(pos + 4)?;
        Ok(TypeRecord {
            id,
            name_off: blob.u32_at(pos)?,
            info,
            size_or_type: blob.u32_at(pos + 8)?,
            vlen: (info & 0xffff) as usize,
            kind: (info >> 24) & 0x1f,
            body: pos + 12,
        })
    }

    /// Length of the kind-specific data after the 12-byte header.
    fn extra_len(&self) -> Result<usize, String> {
        let vlen = self.vlen;
        Ok(match self.kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            k => return Err(format!("unknown BTF kind {k} at type {}", self.id)),
        })
    }
}

/// What the walk over the type records collects.
#[derive(Default)]
struct Collector {
    /// (name, func id, proto id) of the FUNCs of interest.
    func_protos: Vec<(String, u32, u32)>,
    /// FUNC_PROTO id -> parameter names.
    protos: BTreeMap<u32, Vec<String>>,
    facts: BtfFacts,
}

impl Collector {
    fn visit(&mut self, blob: &Blob<'_>, t: &TypeRecord) -> Result<(), String> {
        match t.kind {
            12 => {
                let n = blob.name(t.name_off);
                if FUNCS_OF_INTEREST.contains(&n.as_str()) {
                    self.func_protos.push((n, t.id, t.size_or_type));
                }
            }
            13 => {
                let params = (0..t.vlen)
                    .map(|i| blob.u32_at(t.body + 8 * i).map(|off| blob.name(off)))
                    .collect::<Result<Vec<_>, _>>()?;
                self.protos.insert(t.id, params);
            }
            4 => self.struct_members(blob, t)?,
            6 => {
                for i in 0..t.vlen {
                    let n = blob.name(blob.u32_at(t.body + 8 * i)?);
                    let v = blob.u32_at(t.body + 8 * i + 4)? as i32;
                    self.facts.enumerators.insert(n, i64::from(v));
                }
            }
            19 => {
                for i in 0..t.vlen {
                    let n = blob.name(blob.u32_at(t.body + 12 * i)?);
                    let lo = u64::from(blob.u32_at(t.body + 12 * i + 4)?);
                    let hi = u64::from(blob.u32_at(t.body + 12 * i + 8)?);
                    self.facts.enumerators.insert(n, ((hi << 32) | lo) as i64);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Byte offsets of the members of interest of a STRUCT.
    fn struct_members(&mut self, blob: &Blob<'_>, t: &TypeRecord) -> Result<(), String> {
        let sname = blob.name(t.name_off);
        let kind_flag = t.info >> 31;
        for (st, member) in STRUCTS_OF_INTEREST {
            if sname != st {
                continue;
            }
            for i in 0..t.vlen {
                if blob.name(blob.u32_at(t.body + 12 * i)?) == member {
                    let raw = blob.u32_at(t.body + 12 * i + 8)?;
                    let bits = if kind_flag == 1 { raw & 0xff_ffff } else { raw };
                    self.facts
                        .members
                        .entry(format!("{st}.{member}"))
                        .or_default()
                        .push(bits / 8);
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> BtfFacts {
        for (n, func_id, proto) in self.func_protos {
            let params = self.protos.get(&proto).cloned().unwrap_or_default();
            self.facts.funcs.insert(n, (func_id, params));
        }
        self.facts
    }
}

/// A minimal reader of the kernel's BTF blob: FUNC -> FUNC_PROTO parameter names,
/// enumerator values and a few struct member offsets.
pub fn read_btf(path: &Path) -> Result<BtfFacts, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
        return Err("not a little-endian BTF blob".into());
    }
    let hdr_len = u32_at(&data, 4)? as usize;
    let (type_off, type_len) = (u32_at(&data, 8)? as usize, u32_at(&data, 12)? as usize);
    let (str_off, str_len) = (u32_at(&data, 16)? as usize, u32_at(&data, 20)? as usize);
    let strings = data
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or("BTF string section out of bounds")?;
    let blob = Blob {
        data: &data,
        strings,
    };
    let mut pos = hdr_len + type_off;
    let end = pos + type_len;
    let mut id: u32 = 0;
    let mut collector = Collector::default();
    while pos < end {
        id += 1;
        let t = TypeRecord::read(&blob, id, pos)?;
        let extra = t.extra_len()?;
        collector.visit(&blob, &t)?;
        pos = t.body + extra;
    }
    Ok(collector.finish())
}

/// The fallback mode: a copy of the kernel's BTF in which the names the fentry and
/// kprobe paths (and the reason-based tracepoint) need are misspelt, so the daemon has
/// to take its tracepoint fallbacks on a kernel that would give it fentry. Only names
/// change (same lengths), so every offset the daemon reads stays right. The file is
/// removed when the returned handle is dropped.
pub fn doctor_btf() -> tempfile::NamedTempFile {
    let mut data = std::fs::read("/sys/kernel/btf/vmlinux").expect("reading kernel BTF");
    for name in [
        "tcp_write_wakeup",
        "tcp_send_active_reset",
        "SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT",
        // The idle-death hook's functions (`sk_error_report` is also the name of a
        // member of struct sock, a callback no one reads by name).
        "sk_error_report",
        "tcp_reset",
    ] {
        let needle = [name.as_bytes(), b"\0"].concat();
        // Every occurrence that starts a string (preceded by NUL) and is the whole string.
        let mut i = 0;
        let mut n = 0;
        while let Some(pos) = data[i..]
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
        {
            let at = i + pos;
            if at > 0 && data[at - 1] == 0 {
                data[at + name.len() - 1] = b'X';
                n += 1;
            }
            i = at + needle.len();
        }
        fact(&format!("doctored_{name}"), n);
    }
    let mut file = tempfile::Builder::new()
        .prefix("vmcheck-btf-fallback-")
        .tempfile()
        .expect("creating a temporary file for the doctored BTF");
    file.write_all(&data).expect("writing doctored BTF");
    file
}
