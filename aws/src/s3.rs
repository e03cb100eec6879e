//! S3 objects through `object_store` (the crate DataFusion uses): landing files and
//! cleaning a table's location. Each PutObject is atomic, so a reader never sees half a
//! file: the local write-to-temp-then-rename needs no counterpart here.

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::{Aws, AwsError};

/// `s3://bucket/key/prefix` → (`bucket`, `key/prefix`).
pub fn split_url(url: &str) -> Result<(String, String), AwsError> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| AwsError::Call(format!("`{url}` is not an s3:// URL")))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(AwsError::Call(format!("`{url}` names no bucket")));
    }
    Ok((bucket.to_string(), key.trim_matches('/').to_string()))
}

/// A client of `bucket` for a Delta Lake warehouse on S3 (`warehouse: s3://...` with the
/// local backend): credentials, region and endpoint from the environment, as the SDK reads
/// them, and conditional puts (`If-None-Match: *`, which S3 has honoured since 2024-08),
/// so that a Delta commit, or a warehouse claim, never overwrites another writer's.
pub fn lake_store(bucket: &str) -> Result<AmazonS3, AwsError> {
    require_endpoint()?;
    if bucket.is_empty() {
        return Err(AwsError::Call(
            "an s3:// warehouse URL names no bucket".into(),
        ));
    }
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
    if let Ok(endpoint) =
        std::env::var("AWS_ENDPOINT_URL_S3").or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
    {
        b = b
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    b.build()
        .map_err(|e| AwsError::Call(format!("S3 bucket {bucket}: {e}")))
}

/// Writes `content` to `url` unless an object is there already (`If-None-Match: *`):
/// `None` when this call created it, otherwise what the object holds. For claims that two
/// processes may race for, such as a warehouse's owner.
pub async fn create_or_read(url: &str, content: &str) -> Result<Option<String>, AwsError> {
    let (bucket, key) = split_url(url)?;
    let store = lake_store(&bucket)?;
    let path = ObjectPath::from(key.as_str());
    let opts = object_store::PutOptions {
        mode: object_store::PutMode::Create,
        ..Default::default()
    };
    match store
        .put_opts(&path, PutPayload::from(content.as_bytes().to_vec()), opts)
        .await
    {
        Ok(_) => Ok(None),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let got = store
                .get(&path)
                .await
                .map_err(|e| AwsError::Call(format!("reading {url}: {e}")))?;
            let bytes = got
                .bytes()
                .await
                .map_err(|e| AwsError::Call(format!("reading {url}: {e}")))?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Err(e) => Err(AwsError::Call(format!("writing {url}: {e}"))),
    }
}

/// See [`Aws::guard`].
pub fn require_endpoint() -> Result<(), AwsError> {
    let required = std::env::var_os("ORCHESTRATOR_REQUIRE_ENDPOINT").is_some();
    let set = std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| !u.is_empty());
    if required && !set {
        return Err(AwsError::Call(
            "ORCHESTRATOR_REQUIRE_ENDPOINT is set but AWS_ENDPOINT_URL is not: refusing to call AWS".into(),
        ));
    }
    Ok(())
}

impl Aws {
    /// The bucket's client, made once per bucket (each holds its own HTTP connection pool).
    fn bucket(&self, bucket: &str) -> Result<std::sync::Arc<AmazonS3>, AwsError> {
        self.guard()?;
        let mut cache = self
            .buckets
            .lock()
            .map_err(|_| AwsError::Call("S3 client cache poisoned".into()))?;
        if let Some(store) = cache.get(bucket) {
            return Ok(store.clone());
        }
        let store = std::sync::Arc::new(self.new_bucket(bucket)?);
        cache.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    fn new_bucket(&self, bucket: &str) -> Result<AmazonS3, AwsError> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(region) = self.region() {
            b = b.with_region(region);
        }
        // The same endpoint the SDK clients use (moto in the tests).
        if let Ok(endpoint) =
            std::env::var("AWS_ENDPOINT_URL_S3").or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        {
            b = b
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        b.build()
            .map_err(|e| AwsError::Call(format!("S3 bucket {bucket}: {e}")))
    }

    /// Writes one object (PutObject: atomic).
    pub async fn put(&self, url: &str, bytes: Vec<u8>) -> Result<(), AwsError> {
        let (bucket, key) = split_url(url)?;
        self.bucket(&bucket)?
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| AwsError::Call(format!("s3:PutObject {url} failed: {e}")))
    }

    /// Reads one object, or `None` if there is none.
    pub async fn get(&self, url: &str) -> Result<Option<Vec<u8>>, AwsError> {
        let (bucket, key) = split_url(url)?;
        match self.bucket(&bucket)?.get(&ObjectPath::from(key)).await {
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| AwsError::Call(format!("s3:GetObject {url} failed: {e}"))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(AwsError::Call(format!("s3:GetObject {url} failed: {e}"))),
        }
    }

    /// Whether `url`'s bucket exists and its prefix can be listed (one ListObjectsV2 call),
    /// said for a person when not.
    pub async fn reachable(&self, url: &str) -> Result<(), String> {
        let (bucket, key) = split_url(url).map_err(|e| e.to_string())?;
        let store = self.bucket(&bucket).map_err(|e| e.to_string())?;
        let prefix = (!key.is_empty()).then(|| ObjectPath::from(key));
        match store.list_with_delimiter(prefix.as_ref()).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("NoSuchBucket") => Err(format!(
                "bucket `{bucket}` does not exist: create it (aws s3 mb s3://{bucket}) or fix the URL"
            )),
            Err(e) if e.to_string().contains("AccessDenied") => Err(format!(
                "bucket `{bucket}` cannot be listed (AccessDenied): allow s3:ListBucket on it"
            )),
            Err(e) => {
                let text: String = e.to_string().chars().take(300).collect();
                Err(format!("s3:ListObjectsV2 failed: {text}"))
            }
        }
    }

    /// Keys under a prefix, as s3:// URLs.
    pub async fn list(&self, url: &str) -> Result<Vec<String>, AwsError> {
        let (bucket, key) = split_url(url)?;
        let store = self.bucket(&bucket)?;
        let prefix = (!key.is_empty()).then(|| ObjectPath::from(key));
        let metas: Vec<object_store::ObjectMeta> = store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| AwsError::Call(format!("s3:ListObjectsV2 {url} failed: {e}")))?;
        Ok(metas
            .into_iter()
            .map(|m| format!("s3://{bucket}/{}", m.location))
            .collect())
    }

    /// Deletes every object under a prefix; returns how many.
    pub async fn delete_prefix(&self, url: &str) -> Result<usize, AwsError> {
        let keys = self.list(url).await?;
        let (bucket, _) = split_url(url)?;
        let store = self.bucket(&bucket)?;
        for k in &keys {
            let (_, key) = split_url(k)?;
            store
                .delete(&ObjectPath::from(key))
                .await
                .map_err(|e| AwsError::Call(format!("s3:DeleteObject {k} failed: {e}")))?;
        }
        Ok(keys.len())
    }
}
