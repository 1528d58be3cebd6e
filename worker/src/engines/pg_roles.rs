//! PostgreSQL roles: grants name cluster-wide roles that a database dump does not carry.
//!
//! - At backup, the database's privileges are read for the roles they name (`roles` in the
//!   dump's options, beside its encoding). With `roles: true` in the database spec, the
//!   definitions of exactly those roles come along too: `pg_dumpall --roles-only` (without
//!   password hashes unless `role_passwords: true`), cut down by [`globals_for`] to the named
//!   roles and their memberships (`globals` in the options).
//! - At restore, roles the target server lacks are created from those definitions first
//!   ([`role_statements`]); the restore says which it created. Grants to roles that are still
//!   missing (no definitions in the backup, or the server refused them) are left out of the
//!   restore by [`drop_grants_to`] and named in the result, instead of failing the whole
//!   restore on the first one.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};

/// Roles (other than `PUBLIC` and the built-in `pg_*` ones) named by any privilege in the
/// current database: on relations and columns, schemas, routines, types, languages, large
/// objects, foreign data wrappers and servers, default privileges and row security policies.
/// A JSON array of names, sorted.
pub const NAMED_ROLES_SQL: &str = "(SELECT coalesce(json_agg(DISTINCT r.rolname ORDER BY r.rolname), '[]') \
    FROM (SELECT (pg_catalog.aclexplode(relacl)).grantee g FROM pg_catalog.pg_class WHERE relacl IS NOT NULL \
      UNION SELECT (pg_catalog.aclexplode(attacl)).grantee FROM pg_catalog.pg_attribute WHERE attacl IS NOT NULL \
      UNION SELECT (pg_catalog.aclexplode(nspacl)).grantee FROM pg_catalog.pg_namespace WHERE nspacl IS NOT NULL \
      UNION SELECT (pg_catalog.aclexplode(proacl)).grantee FROM pg_catalog.pg_proc WHERE proacl IS NOT NULL \
      UNION SELECT (pg_catalog.aclexplode(typacl)).grantee FROM pg_catalog.pg_type WHERE typacl IS NOT NULL \
      UNION SELECT (pg_catalog.aclexplode(lanacl)).grantee FROM pg_catalog.pg_language WHERE lanacl IS NOT NULL \
      UNION SELECT (pg_catalog.aclexplode(lomacl)).grantee FROM pg_catalog.pg_largeobject_metadata WHERE lomacl IS NOT NULL \
      UNION SELECT (pg_catalog.aclexplode(fdwacl)).grantee FROM pg_catalog.pg_foreign_data_wrapper WHERE fdwacl IS NOT NULL \
      UNION SELECT (pg_catalog.aclexplode(srvacl)).grantee FROM pg_catalog.pg_foreign_server WHERE srvacl IS NOT NULL \
      UNION SELECT defaclrole FROM pg_catalog.pg_default_acl \
      UNION SELECT (pg_catalog.aclexplode(defaclacl)).grantee FROM pg_catalog.pg_default_acl \
      UNION SELECT unnest(polroles) FROM pg_catalog.pg_policy) x \
    JOIN pg_catalog.pg_roles r ON r.oid = x.g WHERE r.rolname !~ '^pg_')";

/// A role name at the start of `text` as PostgreSQL prints it (bare, or double-quoted with `""`
/// for a quote), and the text after it.
fn leading_ident(text: &str) -> Option<(String, &str)> {
    if let Some(rest) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if rest[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    return Some((name, &rest[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let end = text.find([' ', ';', ',']).unwrap_or(text.len());
        (end > 0).then(|| (text[..end].to_owned(), &text[end..]))
    }
}

/// What a line of `pg_dumpall --roles-only` is about.
#[derive(Debug, PartialEq)]
enum RoleLine {
    /// `CREATE ROLE r;`, `ALTER ROLE r …`, `COMMENT ON ROLE r …`: the role's own definition.
    Own(String),
    /// `GRANT group TO member …`: a membership.
    Membership {
        group: String,
        member: String,
    },
    Other,
}

fn classify(line: &str) -> RoleLine {
    for prefix in ["CREATE ROLE ", "ALTER ROLE ", "COMMENT ON ROLE "] {
        if let Some(rest) = line.strip_prefix(prefix) {
            return match leading_ident(rest) {
                Some((name, _)) => RoleLine::Own(name),
                None => RoleLine::Other,
            };
        }
    }
    if let Some(rest) = line.strip_prefix("GRANT ")
        && let Some((group, rest)) = leading_ident(rest)
        && let Some(rest) = rest.strip_prefix(" TO ")
        && let Some((member, _)) = leading_ident(rest)
    {
        return RoleLine::Membership { group, member };
    }
    RoleLine::Other
}

/// The statements of `pg_dumpall --roles-only` output that define the roles in `roles` and
/// their memberships (the grantor clause dropped: the grantor need not exist where the backup
/// is restored).
pub fn globals_for(dumpall: &str, roles: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for line in dumpall.lines() {
        let keep = match classify(line) {
            RoleLine::Own(name) => roles.contains(&name),
            RoleLine::Membership { member, .. } => roles.contains(&member),
            RoleLine::Other => false,
        };
        if keep {
            let line = match line.find(" GRANTED BY ") {
                Some(at) if line.starts_with("GRANT ") => format!("{};", &line[..at]),
                _ => line.to_owned(),
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// For role `role`: its own statements (create, attributes, settings, comment) and its
/// memberships (`GRANT group TO role`), from [`globals_for`]'s output.
pub fn role_statements(globals: &str, role: &str) -> (Vec<String>, Vec<String>) {
    let (mut own, mut memberships) = (Vec::new(), Vec::new());
    for line in globals.lines() {
        match classify(line) {
            RoleLine::Own(name) if name == role => own.push(line.to_owned()),
            RoleLine::Membership { member, .. } if member == role => {
                memberships.push(line.to_owned());
            }
            _ => {}
        }
    }
    (own, memberships)
}

/// A role name as it may appear in pg_restore's output: bare and quoted.
fn spellings(role: &str) -> [String; 2] {
    [
        role.to_owned(),
        format!("\"{}\"", role.replace('"', "\"\"")),
    ]
}

/// Whether an ACL statement of pg_restore's script names one of `missing` as grantee,
/// grantor (`SET SESSION AUTHORIZATION`) or default-privilege owner (`FOR ROLE`).
fn names_any(line: &str, missing: &[[String; 2]]) -> bool {
    let line = line.trim_end();
    missing.iter().flatten().any(|r| {
        line.ends_with(&format!(" TO {r};"))
            || line.ends_with(&format!(" TO {r} WITH GRANT OPTION;"))
            || line.ends_with(&format!(" FROM {r};"))
            || line.ends_with(&format!(" FROM {r} CASCADE;"))
            || line.contains(&format!(" FOR ROLE {r} "))
            || line == format!("SET SESSION AUTHORIZATION {r};")
    })
}

/// Longest line of the script inspected as a whole; longer ones (outside table data) pass
/// through untouched. ACL statements are far shorter.
const MAX_LINE: usize = 64 << 10;

/// Copies pg_restore's SQL script from `input` to `out`, leaving out the statements of ACL
/// entries that name a role in `missing`; returns how many were left out. Table data (between
/// `COPY … FROM stdin;` and `\.`) streams through without being inspected or held: memory stays
/// bounded by [`MAX_LINE`] whatever the rows.
pub fn drop_grants_to(
    mut input: impl BufRead,
    mut out: impl Write,
    missing: &[String],
) -> io::Result<u64> {
    let missing: Vec<[String; 2]> = missing.iter().map(|r| spellings(r)).collect();
    let (mut in_copy, mut in_acl, mut dropped) = (false, false, 0u64);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let n = io::Read::take(&mut input, MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let complete = line.last() == Some(&b'\n');
        if in_copy || !complete {
            // Row data, or a very long line (a function body, say): straight through, its
            // rest streamed; only the end-of-data marker matters.
            out.write_all(&line)?;
            if !complete {
                stream_line(&mut input, &mut out)?;
            }
            in_copy &= line != b"\\.\n";
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if text.starts_with("-- Name: ") {
            in_acl = text.contains("; Type: ACL;") || text.contains("; Type: DEFAULT ACL;");
        } else if text.starts_with("COPY ") && text.trim_end().ends_with(" FROM stdin;") {
            in_copy = true;
        } else if in_acl && names_any(&text, &missing) {
            dropped += 1;
            continue;
        }
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(dropped)
}

/// Copies the rest of the current line (through its newline) from `input` to `out`.
fn stream_line(input: &mut impl BufRead, out: &mut impl Write) -> io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.write_all(&buf[..=i])?;
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                out.write_all(buf)?;
                input.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMPALL: &str = "--\n-- Roles\n--\n\n\
        CREATE ROLE app_owner;\n\
        ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;\n\
        CREATE ROLE \"Reader \"\"x\"\"\";\n\
        ALTER ROLE \"Reader \"\"x\"\"\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;\n\
        COMMENT ON ROLE \"Reader \"\"x\"\"\" IS 'reads';\n\
        CREATE ROLE postgres;\n\
        ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;\n\
        ALTER ROLE app_owner SET work_mem TO '8MB';\n\
        \n--\n-- Role memberships\n--\n\n\
        GRANT app_owner TO \"Reader \"\"x\"\"\" GRANTED BY postgres;\n\
        GRANT pg_read_all_data TO postgres GRANTED BY postgres;\n";

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_named_roles_are_kept_without_grantors() {
        let kept = globals_for(DUMPALL, &set(&["Reader \"x\"", "app_owner"]));
        assert!(!kept.contains("postgres"), "{kept}");
        assert!(kept.contains("ALTER ROLE app_owner SET work_mem TO '8MB';"));
        assert!(
            kept.contains("GRANT app_owner TO \"Reader \"\"x\"\"\";\n"),
            "{kept}"
        );
        let (own, memberships) = role_statements(&kept, "Reader \"x\"");
        assert_eq!(own.len(), 3, "{own:?}");
        assert!(own[0].starts_with("CREATE ROLE \"Reader"));
        assert_eq!(memberships, ["GRANT app_owner TO \"Reader \"\"x\"\"\";"]);
        let (own, memberships) = role_statements(&kept, "app_owner");
        assert_eq!(own.len(), 3);
        assert!(memberships.is_empty());
    }

    #[test]
    fn names_are_read_bare_and_quoted() {
        assert_eq!(leading_ident("a_b;"), Some(("a_b".into(), ";")));
        assert_eq!(
            leading_ident("\"A \"\"b\"\"\" WITH"),
            Some(("A \"b\"".into(), " WITH"))
        );
        assert_eq!(leading_ident("\"open"), None);
        assert_eq!(leading_ident(""), None);
    }

    fn filter(script: &str, missing: &[&str], capacity: usize) -> (String, u64) {
        let missing: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let input = io::BufReader::with_capacity(capacity, script.as_bytes());
        let dropped = drop_grants_to(input, &mut out, &missing).unwrap();
        (String::from_utf8(out).unwrap(), dropped)
    }

    const SCRIPT: &str = "CREATE TABLE public.t (a text);\n\
        COPY public.t (a) FROM stdin;\n\
        GRANT SELECT ON TABLE public.t TO reader;\n\
        -- Name: x; Type: ACL; Schema: -; Owner: -\n\
        \\.\n\
        \n--\n-- Name: TABLE t; Type: ACL; Schema: public; Owner: postgres\n--\n\n\
        GRANT SELECT ON TABLE public.t TO reader;\n\
        GRANT SELECT ON TABLE public.t TO \"Mixed\" WITH GRANT OPTION;\n\
        GRANT INSERT ON TABLE public.t TO present;\n\
        SET SESSION AUTHORIZATION reader;\n\
        GRANT UPDATE ON TABLE public.t TO present;\n\
        RESET SESSION AUTHORIZATION;\n\
        REVOKE ALL ON TABLE public.t FROM reader;\n\
        \n--\n-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: public; Owner: reader\n--\n\n\
        ALTER DEFAULT PRIVILEGES FOR ROLE reader IN SCHEMA public GRANT SELECT ON TABLES TO present;\n\
        \n--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: postgres\n--\n\n\
        CREATE FUNCTION public.f() RETURNS text AS $$ GRANT SELECT ON TABLE public.t TO reader; $$;\n\
        GRANT SELECT ON TABLE public.t TO reader;\n";

    #[test]
    fn grants_to_missing_roles_are_dropped_and_data_is_never_touched() {
        for capacity in [1, 2, 3, 7, 64, 1 << 16] {
            let (out, dropped) = filter(SCRIPT, &["reader", "Mixed"], capacity);
            assert_eq!(dropped, 5, "capacity {capacity}:\n{out}");
            // The rows (between COPY and \.) pass untouched, whatever they look like.
            assert!(out.contains(
                "FROM stdin;\nGRANT SELECT ON TABLE public.t TO reader;\n-- Name: x; Type: ACL"
            ));
            assert!(out.contains("TO present;\nRESET SESSION AUTHORIZATION;\n"));
            assert!(out.contains("GRANT UPDATE ON TABLE public.t TO present;"));
            assert!(!out.contains("FOR ROLE reader"));
            // Outside an ACL entry nothing is judged.
            assert!(
                out.ends_with("$$;\nGRANT SELECT ON TABLE public.t TO reader;\n"),
                "{out}"
            );
        }
        let (out, dropped) = filter(SCRIPT, &[], 64);
        assert_eq!((out.as_str(), dropped), (SCRIPT, 0));
    }

    #[test]
    fn long_lines_stream_through() {
        let long = format!(
            "COPY public.t (a) FROM stdin;\n{}\n\\.\n{}\n",
            "x".repeat(300_000),
            "y".repeat(100_000)
        );
        let (out, dropped) = filter(&long, &["reader"], 8192);
        assert_eq!((out, dropped), (long, 0));
    }
}
