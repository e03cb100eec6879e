//! Where the ingest lands files: a local directory, or an S3 prefix (`output: s3://...`)
//! on the aws backend. Paths are relative (`bars/dt=2026-05-11/NVDA.csv`). A local file is
//! written to a temporary name and renamed; an S3 object is one PutObject: either way a
//! crawl never sees half a file.

use std::collections::HashSet;
use std::path::PathBuf;

use orchestrator_aws::Aws;

use super::IngestError;

pub enum Landing {
    Dir(PathBuf),
    S3 {
        aws: Box<Aws>,
        /// `s3://bucket/prefix`, no trailing slash.
        url: String,
        /// Keys (relative) that exist, listed once: one LIST instead of a GET per bar.
        known: HashSet<String>,
    },
}

impl Landing {
    pub async fn s3(aws: Aws, url: &str) -> Result<Landing, IngestError> {
        let url = url.trim_end_matches('/').to_string();
        let known = aws
            .list(&format!("{url}/"))
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&format!("{url}/")).map(str::to_string))
            .collect();
        Ok(Landing::S3 {
            aws: Box::new(aws),
            url,
            known,
        })
    }

    pub fn display(&self, rel: &str) -> String {
        match self {
            Landing::Dir(d) => d.join(rel).display().to_string(),
            Landing::S3 { url, .. } => format!("{url}/{rel}"),
        }
    }

    pub fn exists(&self, rel: &str) -> bool {
        match self {
            Landing::Dir(d) => d.join(rel).exists(),
            Landing::S3 { known, .. } => known.contains(rel),
        }
    }

    pub async fn read(&self, rel: &str) -> Result<Option<String>, IngestError> {
        match self {
            Landing::Dir(d) => match std::fs::read_to_string(d.join(rel)) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(crate::files::FileError::Read {
                    path: d.join(rel),
                    source,
                }
                .into()),
            },
            Landing::S3 { aws, url, known } => {
                if !known.contains(rel) {
                    return Ok(None);
                }
                let bytes = aws.get(&format!("{url}/{rel}")).await?;
                Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
            }
        }
    }

    pub async fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<(), IngestError> {
        match self {
            Landing::Dir(d) => super::write_atomic(&d.join(rel), bytes),
            Landing::S3 { aws, url, known } => {
                aws.put(&format!("{url}/{rel}"), bytes.to_vec()).await?;
                known.insert(rel.to_string());
                Ok(())
            }
        }
    }
}
