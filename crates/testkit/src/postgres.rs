//! A fresh, empty Postgres database per test.

use sqlx::Connection;

/// Creates an empty database on the server named by `TEST_DATABASE_URL`
/// (an admin connection URL) and returns a URL for it. Databases are left
/// behind: the whole throwaway cluster is deleted when the run ends.
pub async fn fresh_database() -> String {
    let admin = crate::require_env("TEST_DATABASE_URL");
    let name = format!("t_{}", crate::unique_suffix());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to TEST_DATABASE_URL: {e}"));
    // The name is ours (hex), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    conn.close().await.ok();
    let mut url = url_without_db(&admin);
    url.push('/');
    url.push_str(&name);
    url
}

fn url_without_db(admin: &str) -> String {
    // postgres://user@host:port/db?params → postgres://user@host:port
    let (base, _query) = admin.split_once('?').unwrap_or((admin, ""));
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    match base[scheme_end..].find('/') {
        Some(i) => base[..scheme_end + i].to_owned(),
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_database_name() {
        assert_eq!(super::url_without_db("postgres://u@h:1/postgres"), "postgres://u@h:1");
        assert_eq!(
            super::url_without_db("postgres://u@h:1/p?sslmode=disable"),
            "postgres://u@h:1"
        );
        assert_eq!(super::url_without_db("postgres://u@h:1"), "postgres://u@h:1");
    }
}
