//! UTC timestamps in the one form image lists allow: `YYYY-MM-DDTHH:MM:SSZ`.
//!
//! `proto` never reads the clock: every check that depends on time takes a
//! [`Timestamp`] from its caller, so a whole update cycle is judged at one
//! fixed instant and tests can move time freely.

use std::fmt;

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

use crate::Error;

const FORMAT: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// A point in time with one-second resolution, always UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: i64) -> Result<Self, Error> {
        OffsetDateTime::from_unix_timestamp(secs).map(|_| Self(secs)).map_err(|_| Error::Date(secs.to_string()))
    }

    /// Converts from `time`'s representation, dropping sub-second precision.
    pub fn from_datetime(at: OffsetDateTime) -> Self {
        Self(at.unix_timestamp())
    }

    /// Parses exactly `YYYY-MM-DDTHH:MM:SSZ`: no fractions, no offsets, no
    /// surrounding space.
    pub fn parse(s: &str) -> Result<Self, Error> {
        // The format description alone would accept a few lenient variants
        // (e.g. a sign on large years); the fixed length rules them out.
        if s.len() != 20 {
            return Err(Error::Date(s.to_owned()));
        }
        time::PrimitiveDateTime::parse(s, FORMAT)
            .map(|t| Self(t.assume_utc().unix_timestamp()))
            .map_err(|_| Error::Date(s.to_owned()))
    }

    /// An OpenSSL time (a certificate's or CRL's date), to the second;
    /// `None` if OpenSSL cannot compare it with the epoch.
    pub fn from_asn1(t: &openssl::asn1::Asn1TimeRef) -> Option<Self> {
        let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
        let d = epoch.diff(t).ok()?;
        Self::from_unix(i64::from(d.days) * 86_400 + i64::from(d.secs)).ok()
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0
    }

    /// This timestamp moved by `secs` seconds (saturating at the ends of the
    /// representable range).
    pub fn add_seconds(self, secs: i64) -> Self {
        let moved = self.datetime().saturating_add(Duration::seconds(secs));
        Self(moved.unix_timestamp())
    }

    fn datetime(self) -> OffsetDateTime {
        // Every constructor checked that the value is representable.
        OffsetDateTime::from_unix_timestamp(self.0).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.datetime().format(FORMAT) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_list_format() {
        let t = Timestamp::parse("2011-03-10T17:09:12Z").unwrap();
        assert_eq!(t.unix(), 1_299_776_952);
        assert_eq!(t.to_string(), "2011-03-10T17:09:12Z");
    }

    #[test]
    fn rejects_every_other_form() {
        for bad in [
            "2011-03-10T17:09:12",
            "2011-03-10T17:09:12.5Z",
            "2011-03-10T17:09:12+00:00",
            "2011-03-10 17:09:12Z",
            " 2011-03-10T17:09:12Z",
            "2011-3-10T17:09:12Z",
            "2011-02-30T17:09:12Z",
            "2011-03-10T24:00:00Z",
            "",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
