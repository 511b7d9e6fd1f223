//! Locating tracefs and reading tracepoint record layouts from it.

use std::path::{Path, PathBuf};

use keepalive_common::tracefs::{Field, field};

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
