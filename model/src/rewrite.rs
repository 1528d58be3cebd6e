//! `--rewrite OLD=NEW`: how a restore renames paths, databases, hosts and config values.
//!
//! A rule matches a whole value, or a path prefix that ends at a `/` boundary, so
//! `/srv/shop=/srv/shop-copy` turns `/srv/shop/uploads` into `/srv/shop-copy/uploads` but leaves
//! `/srv/shopping` alone. The first rule that matches a value wins.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::app::AppSpec;

/// One `OLD=NEW` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    pub old: String,
    pub new: String,
}

impl FromStr for Rewrite {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((old, new)) if !old.is_empty() => Ok(Rewrite {
                old: old.to_owned(),
                new: new.to_owned(),
            }),
            _ => Err(ModelError::Rewrite(s.to_owned())),
        }
    }
}

impl std::fmt::Display for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.old, self.new)
    }
}

/// Applies the first matching rule to one value; returns it unchanged when none matches.
pub fn rewrite_value(rules: &[Rewrite], value: &str) -> String {
    for r in rules {
        if value == r.old {
            return r.new.clone();
        }
        if let Some(rest) = value.strip_prefix(&r.old)
            && (r.old.ends_with('/') || rest.starts_with('/'))
        {
            return format!("{}{rest}", r.new);
        }
    }
    value.to_owned()
}

/// Rewrites every string inside a JSON value (config maps), keys left alone.
pub fn rewrite_json(rules: &[Rewrite], value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(rewrite_value(rules, s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| rewrite_json(rules, v)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), rewrite_json(rules, v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The spec a restore creates: renamed to `new_name`, moved to `cluster`, with the rules applied
/// to volume paths, database names, hosts and config values.
pub fn rewrite_spec(spec: &AppSpec, new_name: &str, cluster: &str, rules: &[Rewrite]) -> AppSpec {
    let mut out = spec.clone();
    out.name = new_name.to_owned();
    out.cluster = cluster.to_owned();
    for c in &mut out.components {
        if let Some(config) = &c.config {
            c.config = Some(rewrite_json(rules, config));
        }
        for v in &mut c.volumes {
            v.path = rewrite_value(rules, &v.path);
        }
        for d in &mut c.databases {
            d.host = d.host.as_deref().map(|h| rewrite_value(rules, h));
            for name in &mut d.databases {
                *name = rewrite_value(rules, name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<Rewrite> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn whole_values_and_path_prefixes() {
        let r = rules(&["/srv/shop=/srv/shop-copy", "shop=shop_copy"]);
        assert_eq!(rewrite_value(&r, "/srv/shop"), "/srv/shop-copy");
        assert_eq!(
            rewrite_value(&r, "/srv/shop/uploads"),
            "/srv/shop-copy/uploads"
        );
        assert_eq!(rewrite_value(&r, "/srv/shopping"), "/srv/shopping");
        assert_eq!(rewrite_value(&r, "shop"), "shop_copy");
        assert_eq!(rewrite_value(&r, "shops"), "shops");
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!("nothing".parse::<Rewrite>().is_err());
        assert!("=x".parse::<Rewrite>().is_err());
        assert_eq!("a=".parse::<Rewrite>().unwrap().new, "");
        assert_eq!("a=b=c".parse::<Rewrite>().unwrap().new, "b=c");
    }

    #[test]
    fn spec_rewrite_touches_paths_dbs_hosts_and_config() {
        let spec = AppSpec::from_yaml(
            "name: shop\ncomponents:\n  - name: api\n    config: {ingress_host: shop.example.com, n: 3}\n    volumes: [{name: up, path: /srv/shop/up}]\n    databases: [{name: m, engine: postgres, host: db-a, databases: [shop]}]\n",
        )
        .unwrap();
        let r = rules(&[
            "/srv/shop=/srv/copy",
            "shop=shop_copy",
            "db-a=db-b",
            "shop.example.com=copy.example.com",
        ]);
        let out = rewrite_spec(&spec, "shop-copy", "dc-b", &r);
        let c = &out.components[0];
        assert_eq!(out.name, "shop-copy");
        assert_eq!(out.cluster, "dc-b");
        assert_eq!(c.volumes[0].path, "/srv/copy/up");
        assert_eq!(c.databases[0].databases, vec!["shop_copy"]);
        assert_eq!(c.databases[0].host.as_deref(), Some("db-b"));
        let cfg = c.config.as_ref().unwrap();
        assert_eq!(cfg["ingress_host"], "copy.example.com");
        assert_eq!(cfg["n"], 3);
    }
}
