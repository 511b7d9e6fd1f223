//! `keepalive-daemon connections`: fetches GET /connections from a running daemon and
//! renders it as a table (the binary prints it).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    time::Duration,
};

use crate::exporter::connections::Listing;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon's connections could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("resolving --web.address {address}")]
    Resolve {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--web.address {address} resolves to nothing")]
    NoAddress { address: String },
    #[error("cannot reach keepalive-daemon at {addr}: is it running? (pass --web.address)")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("reading the daemon's answer")]
    Read {
        #[source]
        source: std::io::Error,
    },
    #[error("malformed HTTP answer")]
    Malformed,
    #[error("GET /connections from {addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: String,
        body: String,
    },
    #[error("parsing GET /connections")]
    Parse {
        #[source]
        source: serde_json::Error,
    },
}

/// The daemon's connections at `address`, at most `limit`, as the table to print.
pub fn connections_table(address: &str, limit: usize) -> Result<String, ClientError> {
    let addr = address
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            address: address.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| ClientError::NoAddress {
            address: address.to_owned(),
        })?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|source| ClientError::Connect { addr, source })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let request = format!(
        "GET /connections?limit={limit} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|source| ClientError::Read { source })?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(ClientError::Malformed)?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(ClientError::Status {
            addr,
            status: status.to_owned(),
            body: body.trim().to_owned(),
        });
    }
    let listing: Listing =
        serde_json::from_str(body).map_err(|source| ClientError::Parse { source })?;
    Ok(super::table::table(&listing))
}
