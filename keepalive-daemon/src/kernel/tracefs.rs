//! Locating tracefs and reading tracepoint record layouts from it: the field offsets of
//! tracepoint records move between kernel versions, so they are read from each event's
//! `format` file.

use std::path::{Path, PathBuf};

/// A field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// Finds `name` in a `format` file's text. Lines look like
/// `\tfield:void * timer;\toffset:8;\tsize:8;\tsigned:0;`; array fields are written
/// `field:__u8 saddr[4];`.
pub fn field(format: &str, name: &str) -> Option<Field> {
    format.lines().find_map(|line| {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.trim().parse().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.trim().parse().ok();
            }
        }
        // Drop an array suffix first: it may hold spaces (`[sizeof(struct x)]`).
        let decl = decl?.split('[').next()?.trim_end();
        let ident = decl.rsplit([' ', '*']).next()?;
        (ident == name).then_some(Field {
            offset: offset?,
            size: size?,
        })
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {source}; \
         mount it (mount -t tracefs nodev /sys/kernel/tracing) or run with CAP_SYS_ADMIN once"
    )]
    Mount { source: std::io::Error },
    #[error("tracepoint {event} is not available: cannot read {path}: {source}")]
    Format {
        event: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint {event} has no field {field}")]
    NoField { event: String, field: String },
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting it at /sys/kernel/tracing when nothing is mounted.
pub fn root() -> Result<PathBuf, TracefsError> {
    if let Some(p) = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
    {
        return Ok(p.to_owned());
    }
    let target = Path::new(CANDIDATES[0]);
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (src, dst, fstype) = (c("nodev"), c(CANDIDATES[0]), c("tracefs"));
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount {
            source: std::io::Error::last_os_error(),
        });
    }
    log::info!("mounted tracefs at {}", target.display());
    Ok(target.to_owned())
}

/// A tracepoint's `format` file, read once and queried per field.
pub struct EventFormat {
    event: String,
    text: String,
}

impl EventFormat {
    pub fn read(root: &Path, category: &str, name: &str) -> Result<EventFormat, TracefsError> {
        let event = format!("{category}:{name}");
        let path = root.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
            event: event.clone(),
            path,
            source,
        })?;
        Ok(EventFormat { event, text })
    }

    pub fn field(&self, name: &str) -> Result<Field, TracefsError> {
        field(&self.text, name).ok_or_else(|| TracefsError::NoField {
            event: self.event.clone(),
            field: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_RESET: &str = "name: tcp_send_reset
ID: 1456
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u8 saddr[sizeof(struct sockaddr_in6)];\toffset:32;\tsize:28;\tsigned:0;
\tfield:enum sk_rst_reason reason;\toffset:92;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p\", REC->skbaddr
";

    #[test]
    fn finds_pointer_enum_and_array_fields() {
        assert_eq!(
            field(SEND_RESET, "skaddr"),
            Some(Field {
                offset: 16,
                size: 8
            })
        );
        assert_eq!(
            field(SEND_RESET, "reason"),
            Some(Field {
                offset: 92,
                size: 4
            })
        );
        assert_eq!(
            field(SEND_RESET, "saddr"),
            Some(Field {
                offset: 32,
                size: 28
            })
        );
        assert_eq!(
            field(SEND_RESET, "state"),
            Some(Field {
                offset: 24,
                size: 4
            })
        );
    }

    #[test]
    fn absent_fields_and_prefixes_do_not_match() {
        assert_eq!(field(SEND_RESET, "skb"), None);
        assert_eq!(field(SEND_RESET, "addr"), None);
        assert_eq!(field("", "reason"), None);
        assert_eq!(field("\tfield:int x;\toffset:zz;\tsize:4;", "x"), None);
    }
}
