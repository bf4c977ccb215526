//! The environment registry (environments.md 1): ids in registry order, which is the default env
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
    fn names() {
        assert_eq!(family("metaworld/button-press-v3"), "metaworld");
        assert_eq!(task_name("metaworld/button-press-v3"), "button-press-v3");
        assert!(is_registered("metaworld/reach-v3"));
        assert!(!is_registered("procthor/x"));
    }
}
