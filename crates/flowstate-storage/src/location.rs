//! Where a job's checkpoints live, as the user names it: a local directory, or an
//! S3-compatible bucket and prefix (`s3://bucket/prefix`).
//!
//! Parsing is the only decision here; [`CheckpointLocation::open`] and
//! [`CheckpointLocation::open_existing`] make the storage. S3's endpoint, region and
//! credentials come from the environment the way the AWS tools read them
//! ([`S3Settings::from_env`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flowstate_core::StorageError;

use crate::ObjectCheckpointStorage;

/// A checkpoint directory: local, or a prefix in an S3-compatible bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointLocation {
    /// A local directory (shared by every process of a job on one machine).
    Local(PathBuf),
    /// `s3://bucket/prefix`: objects under `prefix/` in `bucket`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, without leading or trailing `/` (empty: the whole bucket).
        prefix: String,
    },
}

/// How to reach an S3-compatible store. What is not set here, `object_store` reads
/// from the remaining `AWS_*` variables (session token, instance role, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// The endpoint (`http://127.0.0.1:9000`); `None`: AWS itself.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when none is set).
    pub region: String,
    /// Access key id and secret; `None`: the environment's or the instance's.
    pub credentials: Option<(String, String)>,
}

impl S3Settings {
    /// As the AWS tools read them: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`,
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID` with
    /// `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env() -> Self {
        let var = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok());
        S3Settings {
            endpoint: var(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]),
            region: var(&["AWS_REGION", "AWS_DEFAULT_REGION"])
                .unwrap_or_else(|| "us-east-1".into()),
            credentials: var(&["AWS_ACCESS_KEY_ID"]).zip(var(&["AWS_SECRET_ACCESS_KEY"])),
        }
    }
}

/// Why a location string was refused.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint location `{given}`: {reason}")]
pub struct LocationError {
    /// The string as given.
    pub given: String,
    /// Why it was refused.
    pub reason: String,
}

impl FromStr for CheckpointLocation {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, LocationError> {
        let refuse = |reason: &str| LocationError {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(refuse("empty"));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(CheckpointLocation::Local(PathBuf::from(s)));
        };
        match scheme {
            "s3" | "s3a" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(refuse("no bucket (expected s3://bucket/prefix)"));
                }
                let prefix = prefix.trim_matches('/');
                if prefix
                    .split('/')
                    .any(|seg| seg == "." || seg == ".." || (seg.is_empty() && !prefix.is_empty()))
                {
                    return Err(refuse("the prefix has an empty, `.` or `..` segment"));
                }
                Ok(CheckpointLocation::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                })
            }
            "file" => Ok(CheckpointLocation::Local(PathBuf::from(rest))),
            other => Err(refuse(&format!(
                "unsupported scheme `{other}://` (a local path or s3://bucket/prefix)"
            ))),
        }
    }
}

impl fmt::Display for CheckpointLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointLocation::Local(p) => write!(f, "{}", p.display()),
            CheckpointLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            CheckpointLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl From<PathBuf> for CheckpointLocation {
    fn from(p: PathBuf) -> Self {
        CheckpointLocation::Local(p)
    }
}

impl From<&PathBuf> for CheckpointLocation {
    fn from(p: &PathBuf) -> Self {
        CheckpointLocation::Local(p.clone())
    }
}

impl From<&CheckpointLocation> for CheckpointLocation {
    fn from(l: &CheckpointLocation) -> Self {
        l.clone()
    }
}

impl From<&Path> for CheckpointLocation {
    fn from(p: &Path) -> Self {
        CheckpointLocation::Local(p.to_path_buf())
    }
}

impl CheckpointLocation {
    /// The local directory, when local.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            CheckpointLocation::Local(p) => Some(p),
            CheckpointLocation::S3 { .. } => None,
        }
    }

    /// The location of the relative `/`-separated `path` below this one
    /// (`chk-7`, `savepoints/sp-9`).
    pub fn join(&self, path: &str) -> CheckpointLocation {
        match self {
            CheckpointLocation::Local(p) => CheckpointLocation::Local(p.join(path)),
            CheckpointLocation::S3 { bucket, prefix } => {
                let path = path.trim_matches('/');
                CheckpointLocation::S3 {
                    bucket: bucket.clone(),
                    prefix: match (prefix.is_empty(), path.is_empty()) {
                        (_, true) => prefix.clone(),
                        (true, false) => path.to_string(),
                        (false, false) => format!("{prefix}/{path}"),
                    },
                }
            }
        }
    }

    /// This location with its last `levels` path segments removed (the checkpoint
    /// directory of a snapshot at `chk-<id>`: one level; `savepoints/sp-<id>`: two).
    /// `None` when there are fewer segments.
    pub fn up(&self, levels: usize) -> Option<CheckpointLocation> {
        match self {
            CheckpointLocation::Local(p) => {
                let mut p = p.clone();
                for _ in 0..levels {
                    if !p.pop() {
                        return None;
                    }
                }
                Some(CheckpointLocation::Local(p))
            }
            CheckpointLocation::S3 { bucket, prefix } => {
                let mut segs: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
                if segs.len() < levels {
                    return None;
                }
                segs.truncate(segs.len() - levels);
                Some(CheckpointLocation::S3 {
                    bucket: bucket.clone(),
                    prefix: segs.join("/"),
                })
            }
        }
    }

    /// Storage on this location for a job that writes: a local directory is created
    /// (owner-only) when missing.
    pub fn open(&self) -> Result<ObjectCheckpointStorage, StorageError> {
        match self {
            CheckpointLocation::Local(p) => ObjectCheckpointStorage::local(p),
            CheckpointLocation::S3 { bucket, prefix } => {
                ObjectCheckpointStorage::s3(bucket, prefix, &S3Settings::from_env())
            }
        }
    }

    /// Storage on this location for reading: a missing local directory is an error,
    /// never created.
    pub fn open_existing(&self) -> Result<ObjectCheckpointStorage, StorageError> {
        match self {
            CheckpointLocation::Local(p) => ObjectCheckpointStorage::existing_local(p),
            CheckpointLocation::S3 { bucket, prefix } => {
                ObjectCheckpointStorage::s3(bucket, prefix, &S3Settings::from_env())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> CheckpointLocation {
        CheckpointLocation::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn parses_local_and_s3() {
        let p = |s: &str| s.parse::<CheckpointLocation>();
        assert_eq!(
            p("/tmp/ck").unwrap(),
            CheckpointLocation::Local("/tmp/ck".into())
        );
        assert_eq!(
            p("rel/ck").unwrap(),
            CheckpointLocation::Local("rel/ck".into())
        );
        assert_eq!(
            p("file:///tmp/ck").unwrap(),
            CheckpointLocation::Local("/tmp/ck".into())
        );
        assert_eq!(p("s3://b/jobs/a/").unwrap(), s3("b", "jobs/a"));
        assert_eq!(p("s3://b").unwrap(), s3("b", ""));
        assert_eq!(p("s3a://b/x").unwrap(), s3("b", "x"));
        for bad in [
            "",
            "s3://",
            "s3:///x",
            "s3://b/a//c",
            "s3://b/../c",
            "gs://b/x",
        ] {
            assert!(p(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["/tmp/ck", "s3://b/jobs/a", "s3://b"] {
            assert_eq!(s.parse::<CheckpointLocation>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn join_and_up_are_inverse() {
        let root = s3("b", "jobs/a");
        let sp = root.join("savepoints/sp-9");
        assert_eq!(sp, s3("b", "jobs/a/savepoints/sp-9"));
        assert_eq!(sp.up(2).unwrap(), root);
        assert_eq!(s3("b", "").join("chk-1").up(1).unwrap(), s3("b", ""));
        assert_eq!(s3("b", "chk-1").up(2), None);
        let local = CheckpointLocation::Local("/tmp/ck".into());
        assert_eq!(local.join("chk-3").up(1).unwrap(), local);
    }
}
