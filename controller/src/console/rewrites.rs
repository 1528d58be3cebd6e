//! The restore form's proposals (pure): a copy's name and the usual rewrites from the app's
//! spec — every volume path beside the original (`/srv/shop=/srv/shop-copy`) and every database
//! name with a suffix (`shop=shop_copy`), so that a copy never lands on the original. Hosts stay
//! (a copy usually lives on the same servers). The person edits them before restoring; the
//! restore itself parses them as `--rewrite` does.
//! Also the in-place restore's confirmation: the app's name typed exactly.

use ferry_model::app::AppSpec;
use ferry_model::rewrite::Rewrite;

/// The proposed name of a copy of `app`.
pub fn copy_name(app: &str) -> String {
    format!("{app}-copy")
}

/// The usual rewrites of a copy of `spec`, without duplicates, in spec order.
pub fn propose(spec: &AppSpec) -> Vec<Rewrite> {
    let mut out: Vec<Rewrite> = Vec::new();
    let mut push = |old: &str, new: String| {
        if !old.is_empty() && !out.iter().any(|r| r.old == old) {
            out.push(Rewrite {
                old: old.to_owned(),
                new,
            });
        }
    };
    for c in &spec.components {
        for v in &c.volumes {
            let path = v.path.trim_end_matches('/');
            push(path, format!("{path}-copy"));
        }
    }
    for c in &spec.components {
        for d in &c.databases {
            for name in &d.databases {
                push(name, format!("{name}_copy"));
            }
        }
    }
    out
}

/// The rewrites typed into the form: one `OLD=NEW` per line, blank lines ignored.
pub fn parse_lines(text: &str) -> Result<Vec<String>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<Rewrite>()
                .map(|r| r.to_string())
                .map_err(|_| format!("{l:?} is not a rewrite: write OLD=NEW, one per line"))
        })
        .collect()
}

/// An in-place restore goes ahead only when the app's name was typed exactly.
pub fn confirmed(app: &str, typed: &str) -> bool {
    !app.is_empty() && typed.trim() == app
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        AppSpec::from_yaml(
            "name: shop\ncomponents:\n  - name: web\n    volumes:\n      - {name: files, path: /srv/shop/files/}\n      - {name: again, path: /srv/shop/files}\n  - name: db\n    databases:\n      - {name: main, engine: postgres, databases: [shop, shop_audit]}\n",
        )
        .unwrap()
    }

    #[test]
    fn copies_go_beside_the_original() {
        let r: Vec<String> = propose(&spec()).iter().map(ToString::to_string).collect();
        assert_eq!(
            r,
            [
                "/srv/shop/files=/srv/shop/files-copy",
                "shop=shop_copy",
                "shop_audit=shop_audit_copy"
            ]
        );
        assert_eq!(copy_name("shop"), "shop-copy");
    }

    #[test]
    fn typed_rewrites_are_checked_line_by_line() {
        assert_eq!(
            parse_lines("a=b\n\n  /x=/y  \n").unwrap(),
            vec!["a=b".to_owned(), "/x=/y".to_owned()]
        );
        let e = parse_lines("a=b\nnothing\n").unwrap_err();
        assert!(e.contains("nothing") && e.contains("OLD=NEW"), "{e}");
        assert!(parse_lines("=x").is_err());
        assert_eq!(parse_lines("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn in_place_needs_the_exact_name() {
        assert!(confirmed("shop", "shop"));
        assert!(confirmed("shop", " shop "));
        assert!(!confirmed("shop", "Shop"));
        assert!(!confirmed("shop", ""));
        assert!(!confirmed("", ""));
    }
}
