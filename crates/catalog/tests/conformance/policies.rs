//! Policies: storing, replacing, listing and deleting them, and their
//! would-reject counts.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;
use teledrop_catalog::Catalog;

async fn policies_crud(c: Arc<dyn Catalog>) {
    assert!(c.policies().await.unwrap().is_empty());
    let spec_b = json!({"maxAge": "30d", "selector": {"users": [1, 2]}, "dryRun": false});
    let spec_a = json!({"quota": {"maxBytes": "5Gi"}, "ratio": 0.5});
    c.upsert_policy("ns/b", 1, &spec_b).await.unwrap();
    c.upsert_policy("ns/a", 3, &spec_a).await.unwrap();
    let rows = c.policies().await.unwrap();
    assert_eq!(
        rows.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
        vec!["ns/a", "ns/b"]
    );
    assert_eq!((rows[0].generation, &rows[0].spec), (3, &spec_a));
    assert_eq!((rows[1].generation, &rows[1].spec), (1, &spec_b));
    let first_update = rows[0].updated_at;

    let spec_a2 = json!({"quota": {"maxBytes": "1Gi", "onExceed": "evictOldest"}});
    c.upsert_policy("ns/a", 4, &spec_a2).await.unwrap();
    let rows = c.policies().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].key.as_str(), rows[0].generation, &rows[0].spec),
        ("ns/a", 4, &spec_a2)
    );
    assert!(rows[0].updated_at >= first_update);

    // Would-reject counts survive a new spec and go with the row.
    assert_eq!((rows[0].would_reject, rows[1].would_reject), (0, 0));
    assert!(c.count_would_reject("ns/a").await.unwrap());
    assert!(c.count_would_reject("ns/a").await.unwrap());
    assert!(!c.count_would_reject("never").await.unwrap());
    c.upsert_policy("ns/a", 5, &spec_a2).await.unwrap();
    let rows = c.policies().await.unwrap();
    assert_eq!((rows[0].would_reject, rows[1].would_reject), (2, 0));

    assert!(c.delete_policy("ns/a").await.unwrap());
    assert!(!c.delete_policy("ns/a").await.unwrap());
    assert!(!c.delete_policy("never").await.unwrap());
    let rows = c.policies().await.unwrap();
    assert_eq!(rows.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), vec!["ns/b"]);
}

conformance! {
    catalog policies_crud => postgres_policies_crud, sqlite_policies_crud;
}
