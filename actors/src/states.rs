//! The states of tasks and cycles (docs/database.md §2.3, §2.4) as types. The database keeps them
//! as text; `src/db/` maps between the two, and nothing compares a state as a string.

/// Where a task is in its lifecycle (`task_pool.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskStatus {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by an executor.
    Assigned,
    /// Finished with a result.
    Completed,
    /// Finished without success, or given up.
    Failed,
    /// Its cycle failed before it finished.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Assigned,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The status's name (as logs, metrics labels and the database spell it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Assigned => "assigned",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Still to be run: `pending` or `assigned`.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Assigned)
    }
}

/// Where an evaluation cycle is (`evaluation_cycles.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CycleStatus {
    /// Created, not started.
    Pending,
    /// Its tasks are being run.
    Running,
    /// Scored and weighted.
    Completed,
    /// Ended without weights.
    Failed,
}

impl CycleStatus {
    /// Every status.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Running, Self::Completed, Self::Failed];

    /// The status's name (as logs, metrics labels, the API and the database spell it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for CycleStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        for s in CycleStatus::ALL {
            assert_eq!(CycleStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskStatus::parse("running"), None);
    }
}
