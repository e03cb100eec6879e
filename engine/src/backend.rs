//! Where a workflow's data tasks run: the backend, and the AWS backend's `aws:` block.
//! Plain values, read by the loader and handed to task kinds in their `BuildContext`.

use serde::Deserialize;

/// Where a workflow's data tasks run (`backend:`, or `run --backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// DataFusion, the catalog in the state store, local directories.
    #[default]
    Local,
    /// Athena, the Glue Data Catalog, S3.
    Aws,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Backend, String> {
        match s {
            "local" => Ok(Backend::Local),
            "aws" => Ok(Backend::Aws),
            _ => Err(format!("`{s}` is not a backend: use `local` or `aws`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Aws => "aws",
        }
    }
}

/// The `aws:` block: where the AWS backend's work goes. Checked without calling AWS;
/// `orchestrator doctor --backend aws` makes the calls.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsBlock {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Athena workgroup (default `primary`).
    pub workgroup: Option<String>,
    /// The Glue database tables live in.
    pub database: Option<String>,
    /// `s3://...` for Athena's query results.
    pub output_location: Option<String>,
    /// `s3://...` where created tables live.
    pub warehouse: Option<String>,
}
