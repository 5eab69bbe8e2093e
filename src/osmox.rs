//! OsmoX's vocabulary: delivery statuses and the view of a notification the filter acts on.

/// `deliveryStatus` as OsmoX v8.5 sends it (1–6). The DB column comment saying 0–4 is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeliveryStatus {
    Pending = 1,
    InProgress = 2,
    AwaitingConfirmation = 3,
    QueuedConfirmation = 4,
    Success = 5,
    Failed = 6,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Pending,
        DeliveryStatus::InProgress,
        DeliveryStatus::AwaitingConfirmation,
        DeliveryStatus::QueuedConfirmation,
        DeliveryStatus::Success,
        DeliveryStatus::Failed,
    ];

    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn code(self) -> u64 {
        self as u64
    }

    /// How far one send attempt (one `retryCount` on one provider) has come. OsmoX only
    /// moves a notification forward through these within an attempt (a resend bumps
    /// `retryCount`, a failover changes `providerId`), so a view of the same attempt at an
    /// earlier stage is an older view. Confirmation may go back and forth between 3 and 4.
    pub fn stage(self) -> u8 {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::InProgress => 1,
            DeliveryStatus::AwaitingConfirmation | DeliveryStatus::QueuedConfirmation => 2,
            DeliveryStatus::Success | DeliveryStatus::Failed => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::InProgress => "IN_PROGRESS",
            DeliveryStatus::AwaitingConfirmation => "AWAITING_CONFIRMATION",
            DeliveryStatus::QueuedConfirmation => "QUEUED_CONFIRMATION",
            DeliveryStatus::Success => "SUCCESS",
            DeliveryStatus::Failed => "FAILED",
        }
    }
}

/// A set of statuses as a bit mask: cheap to copy into every endpoint and to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet(u8);

impl StatusSet {
    /// The states on which OsmoX's own webhook fires.
    pub const FINAL: StatusSet = StatusSet((1 << 5) | (1 << 6));

    pub fn insert(&mut self, s: DeliveryStatus) {
        self.0 |= 1 << s.code();
    }

    pub fn contains(self, s: DeliveryStatus) -> bool {
        self.0 & (1 << s.code()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<DeliveryStatus> for StatusSet {
    fn from_iter<I: IntoIterator<Item = DeliveryStatus>>(iter: I) -> Self {
        let mut set = StatusSet::default();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

/// One notification as observed in a response, ready to route and deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The notification's own id: for an archived row, the original notification's id.
    pub id: u64,
    pub delivery_status: DeliveryStatus,
    pub provider_id: Option<u64>,
    pub channel_type: Option<u64>,
    /// Bumped by OsmoX on every send retry (FAILED → PENDING cycles).
    pub retry_count: Option<u64>,
    /// ISO-8601 `updatedOn`, when the response selected it: orders observations.
    pub updated_on: Option<String>,
    /// The webhook body: the object as observed, top-level keys in camelCase, `id` set to
    /// `self.id`, with no `notificationId`.
    pub body: String,
}
