//! Struct offsets and enum values from the kernel's BTF (/sys/kernel/btf/vmlinux).

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};
use fallible_iterator::FallibleIterator as _;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF from {path}: {error}; the daemon needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (or pass --kernel.btf-path to a vmlinux BTF file)"
    )]
    Read {
        path: PathBuf,
        // Not `source`: the message already carries it; a source would repeat it.
        error: btf_rs::Error,
    },
    #[error("kernel BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF has no enumerator {name}")]
    NoEnumerator { name: String },
    #[error("kernel BTF has no function {name}")]
    NoFunction { name: String },
    #[error("kernel BTF lookup of {what} failed: {source}")]
    Lookup { what: String, source: btf_rs::Error },
}

/// A member found by [`KernelBtf::member`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Byte offset from the start of the outer struct.
    pub offset: u32,
    /// Size in bytes when the member is an integer, enum or pointer.
    pub size: Option<u32>,
}

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<KernelBtf, BtfError> {
        let btf = Btf::from_file(path).map_err(|error| BtfError::Read {
            path: path.to_owned(),
            error,
        })?;
        Ok(KernelBtf { btf })
    }

    fn lookup<T>(&self, what: &str, r: btf_rs::Result<T>) -> Result<T, BtfError> {
        r.map_err(|source| BtfError::Lookup {
            what: what.to_owned(),
            source,
        })
    }

    /// Offset of `path` (e.g. `["__sk_common", "skc_family"]`) inside `struct strukt`,
    /// looking through anonymous unions and structs on the way.
    pub fn member(&self, strukt: &str, path: &[&str]) -> Result<MemberInfo, BtfError> {
        let types = self.btf.resolve_types_by_name(strukt).unwrap_or_default();
        let st = types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct {
                name: strukt.to_owned(),
            })?;
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: path.join("."),
        };
        let mut members = st.members;
        let mut base = 0u32;
        let mut found = None;
        for (i, name) in path.iter().enumerate() {
            let (off, ty) = self.find_member(&members, name)?.ok_or_else(no_member)?;
            base += off;
            if i + 1 == path.len() {
                found = Some(MemberInfo {
                    offset: base,
                    size: self.scalar_size(&ty),
                });
            } else {
                members = match ty {
                    Type::Struct(s) | Type::Union(s) => s.members,
                    _ => return Err(no_member()),
                };
            }
        }
        found.ok_or_else(no_member)
    }

    /// Finds `name` among `members`, descending into anonymous members; returns its byte
    /// offset relative to the members' struct and its type with typedefs resolved.
    fn find_member(
        &self,
        members: &[btf_rs::Member],
        name: &str,
    ) -> Result<Option<(u32, Type)>, BtfError> {
        for m in members {
            let mname = self.lookup("member name", self.btf.resolve_name(m))?;
            let ty = self.strip(self.lookup(name, self.btf.resolve_chained_type(m))?)?;
            if mname == name {
                return Ok(Some((m.bit_offset() / 8, ty)));
            }
            if mname.is_empty()
                && let Type::Struct(s) | Type::Union(s) = &ty
                && let Some((off, t)) = self.find_member(&s.members, name)?
            {
                return Ok(Some((m.bit_offset() / 8 + off, t)));
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type, BtfError> {
        for _ in 0..16 {
            ty = match &ty {
                Type::Typedef(t) => self.lookup("typedef", self.btf.resolve_chained_type(t))?,
                Type::Const(t) => self.lookup("const", self.btf.resolve_chained_type(t))?,
                Type::Volatile(t) => self.lookup("volatile", self.btf.resolve_chained_type(t))?,
                _ => return Ok(ty),
            };
        }
        Ok(ty)
    }

    fn scalar_size(&self, ty: &Type) -> Option<u32> {
        match ty {
            Type::Int(i) => Some(i.size() as u32),
            Type::Enum(e) => Some(e.size() as u32),
            Type::Ptr(_) => Some(8),
            _ => None,
        }
    }

    /// The value of enumerator `name`, in whichever (possibly anonymous) enum holds it.
    pub fn enumerator(&self, name: &str) -> Result<u64, BtfError> {
        let mut types = self.btf.type_iter();
        while let Some(ty) = self.lookup("type iteration", types.next())? {
            match &ty {
                Type::Enum(e) => {
                    for m in &e.members {
                        if self.btf.resolve_name(m).is_ok_and(|n| n == name) {
                            return Ok(m.val() as u64);
                        }
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        if self.btf.resolve_name(m).is_ok_and(|n| n == name) {
                            return Ok(m.val());
                        }
                    }
                }
                _ => {}
            }
        }
        Err(BtfError::NoEnumerator {
            name: name.to_owned(),
        })
    }

    /// Number of arguments raw tracepoint `name` passes to BPF programs: the parameters
    /// of its `btf_trace_<name>` typedef (a pointer to a prototype whose first
    /// parameter is the tracepoint's private data, not passed on).
    pub fn raw_tracepoint_args(&self, name: &str) -> Result<usize, BtfError> {
        let typedef = format!("btf_trace_{name}");
        let missing = || BtfError::NoFunction {
            name: typedef.clone(),
        };
        let ty = self
            .btf
            .resolve_types_by_name(&typedef)
            .unwrap_or_default()
            .into_iter()
            .find(|t| matches!(t, Type::Typedef(_)))
            .ok_or_else(missing)?;
        let ptr = self.strip(ty)?;
        let Type::Ptr(ptr) = ptr else {
            return Err(missing());
        };
        match self.lookup(&typedef, self.btf.resolve_chained_type(&ptr))? {
            Type::FuncProto(p) => Ok(p.parameters.len().saturating_sub(1)),
            _ => Err(missing()),
        }
    }

    /// Names of the parameters of kernel function `name`.
    pub fn function_params(&self, name: &str) -> Result<Vec<String>, BtfError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        let func = types
            .into_iter()
            .find_map(|t| match t {
                Type::Func(f) => Some(f),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoFunction {
                name: name.to_owned(),
            })?;
        let proto = match self.lookup(name, self.btf.resolve_chained_type(&func))? {
            Type::FuncProto(p) => p,
            _ => {
                return Err(BtfError::NoFunction {
                    name: name.to_owned(),
                });
            }
        };
        proto
            .parameters
            .iter()
            .map(|p| self.lookup("parameter name", self.btf.resolve_name(p)))
            .collect()
    }
}
