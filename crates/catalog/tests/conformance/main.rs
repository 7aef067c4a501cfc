//! One conformance suite for every catalog backend.
//!
//! Each scenario is an async function over `Arc<dyn Catalog>` (or, for the
//! few that need to open the database again, a `common::Fixture`); the
//! macro below, invoked by each area's module for its scenarios, runs each
//! one against a fresh Postgres database (`postgres_<case>`, needs
//! `TEST_DATABASE_URL`) and a fresh SQLite file (`sqlite_<case>`).

macro_rules! conformance {
    ($($kind:ident $case:ident => $pg:ident, $lite:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $pg() {
                conformance!(@run $kind $case Backend::Postgres);
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $lite() {
                conformance!(@run $kind $case Backend::Sqlite);
            }
        )*
    };
    (@run catalog $case:ident $backend:expr) => {{
        let fx = Fixture::new($backend).await;
        $case(fx.catalog.clone()).await;
        drop(fx);
    }};
    (@run fixture $case:ident $backend:expr) => {{
        $case(Fixture::new($backend).await).await;
    }};
}

mod claims;
mod common;
mod files;
mod jobs;
mod links;
mod migrations;
mod notices;
mod policies;
mod quota;
mod rate;
mod retention;
