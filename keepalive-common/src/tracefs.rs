//! Parsing of tracefs event `format` files, to find field offsets in tracepoint
//! records (they move between kernel versions).

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
