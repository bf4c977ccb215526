//! The environment registry (docs/scheduler.md §6): ids in registry order, which is the default env
//! order of a cycle.

/// Every registered env id, in registry order.
pub const ENV_IDS: [&str; 8] = [
    "metaworld/reach-v3",
    "metaworld/push-v3",
    "metaworld/pick-place-v3",
    "metaworld/door-open-v3",
    "metaworld/drawer-open-v3",
    "metaworld/drawer-close-v3",
    "metaworld/button-press-v3",
    "metaworld/peg-insert-v3",
];

/// One registry row: env id, MetaWorld's internal task name, scene file under the assets dir.
pub const REGISTRY: [(&str, &str, &str); 8] = [
    (
        "metaworld/reach-v3",
        "reach-v3",
        "sawyer_xyz/sawyer_reach_v3.xml",
    ),
    (
        "metaworld/push-v3",
        "push-v3",
        "sawyer_xyz/sawyer_push_v3.xml",
    ),
    (
        "metaworld/pick-place-v3",
        "pick-place-v3",
        "sawyer_xyz/sawyer_pick_place_v3.xml",
    ),
    (
        "metaworld/door-open-v3",
        "door-open-v3",
        "sawyer_xyz/sawyer_door_pull.xml",
    ),
    (
        "metaworld/drawer-open-v3",
        "drawer-open-v3",
        "sawyer_xyz/sawyer_drawer.xml",
    ),
    (
        "metaworld/drawer-close-v3",
        "drawer-close-v3",
        "sawyer_xyz/sawyer_drawer.xml",
    ),
    (
        "metaworld/button-press-v3",
        "button-press-topdown-v3",
        "sawyer_xyz/sawyer_button_press_topdown.xml",
    ),
    (
        "metaworld/peg-insert-v3",
        "peg-insert-side-v3",
        "sawyer_xyz/sawyer_peg_insertion_side.xml",
    ),
];

/// The family of an env id: the part before the first `/`.
pub fn family(env_id: &str) -> &str {
    env_id.split_once('/').map_or(env_id, |(f, _)| f)
}

/// The task name of an env id: the part after the first `/`.
pub fn task_name(env_id: &str) -> &str {
    env_id.split_once('/').map_or("", |(_, t)| t)
}

/// Whether `env_id` is registered.
pub fn is_registered(env_id: &str) -> bool {
    ENV_IDS.contains(&env_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_matches_ids() {
        assert_eq!(REGISTRY.map(|r| r.0), ENV_IDS);
    }

    #[test]
    fn names() {
        assert_eq!(family("metaworld/button-press-v3"), "metaworld");
        assert_eq!(task_name("metaworld/button-press-v3"), "button-press-v3");
        assert!(is_registered("metaworld/reach-v3"));
        assert!(!is_registered("procthor/x"));
    }
}

/// The cycle's env list (docs/scheduler.md §6): explicit ids (deduplicated, all registered) win
/// over families (registry order per family); otherwise every registered id.
pub fn resolve(ids: Option<&[String]>, families: Option<&[String]>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if !out.iter().any(|e| e == id) {
            out.push(id.to_string());
        }
    };
    match (ids, families) {
        (Some(ids), _) if !ids.is_empty() => {
            for id in ids {
                if !is_registered(id) {
                    return Err(format!("unknown environment id: {id}"));
                }
                push(id);
            }
        }
        (_, Some(families)) if !families.is_empty() => {
            for f in families {
                ENV_IDS
                    .iter()
                    .filter(|id| family(id) == f)
                    .for_each(|id| push(id));
            }
            if out.is_empty() {
                return Err("Environment family filter produced zero environments".into());
            }
        }
        _ => ENV_IDS.iter().for_each(|id| push(id)),
    }
    Ok(out)
}

#[cfg(test)]
mod resolve_tests {
    use super::*;

    #[test]
    fn env_list_rules() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(resolve(None, None).unwrap().len(), 8);
        assert_eq!(
            resolve(
                Some(&s(&[
                    "metaworld/push-v3",
                    "metaworld/reach-v3",
                    "metaworld/push-v3"
                ])),
                Some(&s(&["x"]))
            )
            .unwrap(),
            s(&["metaworld/push-v3", "metaworld/reach-v3"])
        );
        assert_eq!(
            resolve(Some(&s(&["metaworld/fly-v3"])), None).unwrap_err(),
            "unknown environment id: metaworld/fly-v3"
        );
        assert_eq!(resolve(None, Some(&s(&["metaworld"]))).unwrap().len(), 8);
        assert_eq!(
            resolve(None, Some(&s(&["procthor"]))).unwrap_err(),
            "Environment family filter produced zero environments"
        );
    }
}
