//! The wire format shared by the HTTP API and its clients (docs/api.md §1): how values are written
//! on the wire, independent of which service writes them.

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339, UTC, `Z`, microseconds (docs/api.md §1).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}
