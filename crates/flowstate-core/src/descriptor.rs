//! State descriptors: the name, serializers and functions that declare a state.
//!
//! A descriptor is what user code hands to a backend (keyed state) or an operator
//! state store. Asking twice with the same name and an equal descriptor yields the same
//! state; another kind or an incompatible serializer is a typed error.
//!
//! ```
//! use flowstate_core::descriptor::{ValueStateDescriptor, ReducingStateDescriptor};
//! let count = ValueStateDescriptor::<u64>::new("count").with_default(0);
//! let max = ReducingStateDescriptor::<i64>::new("max", |a, b| *a.max(b));
//! assert_eq!(count.name(), "count");
//! assert_eq!(max.name(), "max");
//! ```

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{StateError, StateResult};
use crate::serializer::{SerdeSerializer, TypeSerializer};
use crate::state::StateKind;
use crate::ttl::config::{StateTtlConfig, TtlStorage};

/// Checks a state name: non-empty, at most 1024 bytes, no control characters.
pub fn validate_state_name(name: &str) -> StateResult<()> {
    let reason = if name.is_empty() {
        "a state name may not be empty"
    } else if name.len() > 1024 {
        "a state name may be at most 1024 bytes"
    } else if name.chars().any(char::is_control) {
        "a state name may not contain control characters"
    } else {
        return Ok(());
    };
    Err(StateError::InvalidStateName {
        name: name.escape_debug().to_string(),
        reason,
    })
}

/// Flink's `AggregateFunction`: an accumulator `ACC` is what is stored.
pub trait AggregateFunction<IN, ACC, OUT>: Send + Sync + 'static {
    /// A fresh accumulator.
    fn create_accumulator(&self) -> ACC;
    /// Adds one input to `acc`.
    fn add(&self, value: IN, acc: &mut ACC);
    /// The result for an accumulator.
    fn get_result(&self, acc: &ACC) -> OUT;
    /// Merges `other` into `acc` (merging windows).
    fn merge(&self, acc: &mut ACC, other: ACC);
}

/// A reduce function: combines the stored value with a new one.
pub type ReduceFn<T> = Arc<dyn Fn(&T, &T) -> T + Send + Sync>;

/// Declares a [`crate::state::ValueState`].
pub struct ValueStateDescriptor<T> {
    name: String,
    serializer: Arc<dyn TypeSerializer<T>>,
    default: Option<T>,
    ttl: Option<StateTtlConfig>,
    ttl_storage: Option<TtlStorage<T>>,
    queryable: Option<String>,
}

impl<T: Clone> Clone for ValueStateDescriptor<T> {
    fn clone(&self) -> Self {
        ValueStateDescriptor {
            name: self.name.clone(),
            serializer: self.serializer.clone(),
            default: self.default.clone(),
            ttl: self.ttl.clone(),
            ttl_storage: self.ttl_storage.clone(),
            queryable: self.queryable.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> ValueStateDescriptor<T> {
    /// A descriptor with the default serde serializer.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_serializer(name, SerdeSerializer::<T>::arc())
    }
}

impl<T> ValueStateDescriptor<T> {
    /// A descriptor with an explicit serializer.
    pub fn with_serializer(
        name: impl Into<String>,
        serializer: Arc<dyn TypeSerializer<T>>,
    ) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            serializer,
            default: None,
            ttl: None,
            ttl_storage: None,
            queryable: None,
        }
    }
    /// Returns `value` from `value()` instead of `None` when nothing is stored.
    pub fn with_default(mut self, value: T) -> Self {
        self.default = Some(value);
        self
    }
    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Exposes this state to queries under `name` (see the runtime's `query`
    /// module): a job's queryable names are unique; a state without one is never
    /// exposed.
    pub fn queryable(mut self, name: impl Into<String>) -> Self {
        self.queryable = Some(name.into());
        self
    }
    /// The name this state is queryable under, if it is.
    pub fn queryable_name(&self) -> Option<&str> {
        self.queryable.as_deref()
    }

    /// Gives the state a time to live (see [`crate::ttl`]). A config with
    /// [`crate::ttl::UpdateType::Disabled`] leaves the state without TTL.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// The TTL config, if any.
    pub fn ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref()
    }
    /// The TTL config when it is in effect (set and not disabled).
    pub fn enabled_ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref().filter(|t| t.is_enabled())
    }
    /// Marks this descriptor as the stored form of a TTL state (set by
    /// [`crate::ttl`]; backends read it to clean up in the background).
    pub fn with_ttl_storage(mut self, storage: TtlStorage<T>) -> Self {
        self.ttl_storage = Some(storage);
        self
    }
    /// How stored values carry their timestamps, for a state stored with TTL.
    pub fn ttl_storage(&self) -> Option<&TtlStorage<T>> {
        self.ttl_storage.as_ref()
    }
    /// The value serializer.
    pub fn serializer(&self) -> &Arc<dyn TypeSerializer<T>> {
        &self.serializer
    }
    /// The default value, if any.
    pub fn default_value(&self) -> Option<&T> {
        self.default.as_ref()
    }
    /// The kind this descriptor declares.
    pub fn kind(&self) -> StateKind {
        StateKind::Value
    }
}

/// Declares a [`crate::state::ListState`] (keyed) or an operator list state.
pub struct ListStateDescriptor<T> {
    name: String,
    serializer: Arc<dyn TypeSerializer<T>>,
    ttl: Option<StateTtlConfig>,
    ttl_storage: Option<TtlStorage<T>>,
    queryable: Option<String>,
}

impl<T> Clone for ListStateDescriptor<T> {
    fn clone(&self) -> Self {
        ListStateDescriptor {
            name: self.name.clone(),
            serializer: self.serializer.clone(),
            ttl: self.ttl.clone(),
            ttl_storage: self.ttl_storage.clone(),
            queryable: self.queryable.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> ListStateDescriptor<T> {
    /// A descriptor with the default serde serializer for elements.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_serializer(name, SerdeSerializer::<T>::arc())
    }
}

impl<T> ListStateDescriptor<T> {
    /// A descriptor with an explicit element serializer.
    pub fn with_serializer(
        name: impl Into<String>,
        serializer: Arc<dyn TypeSerializer<T>>,
    ) -> Self {
        ListStateDescriptor {
            name: name.into(),
            serializer,
            ttl: None,
            ttl_storage: None,
            queryable: None,
        }
    }
    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Exposes this state to queries under `name` (see the runtime's `query`
    /// module): a job's queryable names are unique; a state without one is never
    /// exposed.
    pub fn queryable(mut self, name: impl Into<String>) -> Self {
        self.queryable = Some(name.into());
        self
    }
    /// The name this state is queryable under, if it is.
    pub fn queryable_name(&self) -> Option<&str> {
        self.queryable.as_deref()
    }

    /// Gives the state a time to live (see [`crate::ttl`]). A config with
    /// [`crate::ttl::UpdateType::Disabled`] leaves the state without TTL.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// The TTL config, if any.
    pub fn ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref()
    }
    /// The TTL config when it is in effect (set and not disabled).
    pub fn enabled_ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref().filter(|t| t.is_enabled())
    }
    /// Marks this descriptor as the stored form of a TTL state (set by
    /// [`crate::ttl`]; backends read it to clean up in the background).
    pub fn with_ttl_storage(mut self, storage: TtlStorage<T>) -> Self {
        self.ttl_storage = Some(storage);
        self
    }
    /// How stored values carry their timestamps, for a state stored with TTL.
    pub fn ttl_storage(&self) -> Option<&TtlStorage<T>> {
        self.ttl_storage.as_ref()
    }
    /// The element serializer.
    pub fn serializer(&self) -> &Arc<dyn TypeSerializer<T>> {
        &self.serializer
    }
}

/// Declares a [`crate::state::MapState`] (keyed) or a broadcast state.
pub struct MapStateDescriptor<K, V> {
    name: String,
    key_serializer: Arc<dyn TypeSerializer<K>>,
    value_serializer: Arc<dyn TypeSerializer<V>>,
    ttl: Option<StateTtlConfig>,
    ttl_storage: Option<TtlStorage<V>>,
    queryable: Option<String>,
}

impl<K, V> Clone for MapStateDescriptor<K, V> {
    fn clone(&self) -> Self {
        MapStateDescriptor {
            name: self.name.clone(),
            key_serializer: self.key_serializer.clone(),
            value_serializer: self.value_serializer.clone(),
            ttl: self.ttl.clone(),
            ttl_storage: self.ttl_storage.clone(),
            queryable: self.queryable.clone(),
        }
    }
}

impl<K, V> MapStateDescriptor<K, V>
where
    K: Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    /// A descriptor with the default serde serializers.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_serializers(
            name,
            SerdeSerializer::<K>::arc(),
            SerdeSerializer::<V>::arc(),
        )
    }
}

impl<K, V> MapStateDescriptor<K, V> {
    /// A descriptor with explicit user-key and value serializers.
    pub fn with_serializers(
        name: impl Into<String>,
        key_serializer: Arc<dyn TypeSerializer<K>>,
        value_serializer: Arc<dyn TypeSerializer<V>>,
    ) -> Self {
        MapStateDescriptor {
            name: name.into(),
            key_serializer,
            value_serializer,
            ttl: None,
            ttl_storage: None,
            queryable: None,
        }
    }
    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Exposes this state to queries under `name` (see the runtime's `query`
    /// module): a job's queryable names are unique; a state without one is never
    /// exposed.
    pub fn queryable(mut self, name: impl Into<String>) -> Self {
        self.queryable = Some(name.into());
        self
    }
    /// The name this state is queryable under, if it is.
    pub fn queryable_name(&self) -> Option<&str> {
        self.queryable.as_deref()
    }

    /// Gives the state a time to live (see [`crate::ttl`]). A config with
    /// [`crate::ttl::UpdateType::Disabled`] leaves the state without TTL.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// The TTL config, if any.
    pub fn ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref()
    }
    /// The TTL config when it is in effect (set and not disabled).
    pub fn enabled_ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref().filter(|t| t.is_enabled())
    }
    /// Marks this descriptor as the stored form of a TTL state (set by
    /// [`crate::ttl`]; backends read it to clean up in the background).
    pub fn with_ttl_storage(mut self, storage: TtlStorage<V>) -> Self {
        self.ttl_storage = Some(storage);
        self
    }
    /// How stored values carry their timestamps, for a state stored with TTL.
    pub fn ttl_storage(&self) -> Option<&TtlStorage<V>> {
        self.ttl_storage.as_ref()
    }
    /// The user-key serializer.
    pub fn key_serializer(&self) -> &Arc<dyn TypeSerializer<K>> {
        &self.key_serializer
    }
    /// The value serializer.
    pub fn value_serializer(&self) -> &Arc<dyn TypeSerializer<V>> {
        &self.value_serializer
    }
}

/// Declares a [`crate::state::ReducingState`].
pub struct ReducingStateDescriptor<T> {
    name: String,
    serializer: Arc<dyn TypeSerializer<T>>,
    reduce: ReduceFn<T>,
    ttl: Option<StateTtlConfig>,
    ttl_storage: Option<TtlStorage<T>>,
    queryable: Option<String>,
}

impl<T> Clone for ReducingStateDescriptor<T> {
    fn clone(&self) -> Self {
        ReducingStateDescriptor {
            name: self.name.clone(),
            serializer: self.serializer.clone(),
            reduce: self.reduce.clone(),
            ttl: self.ttl.clone(),
            ttl_storage: self.ttl_storage.clone(),
            queryable: self.queryable.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> ReducingStateDescriptor<T> {
    /// A descriptor with the default serde serializer.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> Self {
        Self::with_serializer(name, Arc::new(reduce), SerdeSerializer::<T>::arc())
    }
}

impl<T> ReducingStateDescriptor<T> {
    /// A descriptor with an explicit serializer.
    pub fn with_serializer(
        name: impl Into<String>,
        reduce: ReduceFn<T>,
        serializer: Arc<dyn TypeSerializer<T>>,
    ) -> Self {
        ReducingStateDescriptor {
            name: name.into(),
            serializer,
            reduce,
            ttl: None,
            ttl_storage: None,
            queryable: None,
        }
    }
    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Exposes this state to queries under `name` (see the runtime's `query`
    /// module): a job's queryable names are unique; a state without one is never
    /// exposed.
    pub fn queryable(mut self, name: impl Into<String>) -> Self {
        self.queryable = Some(name.into());
        self
    }
    /// The name this state is queryable under, if it is.
    pub fn queryable_name(&self) -> Option<&str> {
        self.queryable.as_deref()
    }

    /// Gives the state a time to live (see [`crate::ttl`]). A config with
    /// [`crate::ttl::UpdateType::Disabled`] leaves the state without TTL.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// The TTL config, if any.
    pub fn ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref()
    }
    /// The TTL config when it is in effect (set and not disabled).
    pub fn enabled_ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref().filter(|t| t.is_enabled())
    }
    /// Marks this descriptor as the stored form of a TTL state (set by
    /// [`crate::ttl`]; backends read it to clean up in the background).
    pub fn with_ttl_storage(mut self, storage: TtlStorage<T>) -> Self {
        self.ttl_storage = Some(storage);
        self
    }
    /// How stored values carry their timestamps, for a state stored with TTL.
    pub fn ttl_storage(&self) -> Option<&TtlStorage<T>> {
        self.ttl_storage.as_ref()
    }
    /// The value serializer.
    pub fn serializer(&self) -> &Arc<dyn TypeSerializer<T>> {
        &self.serializer
    }
    /// The reduce function.
    pub fn reduce_fn(&self) -> &ReduceFn<T> {
        &self.reduce
    }
}

/// Declares a [`crate::state::AggregatingState`]; `ACC` is what is stored.
pub struct AggregatingStateDescriptor<IN, ACC, OUT> {
    name: String,
    serializer: Arc<dyn TypeSerializer<ACC>>,
    function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
    ttl: Option<StateTtlConfig>,
    ttl_storage: Option<TtlStorage<ACC>>,
    queryable: Option<String>,
}

impl<IN, ACC, OUT> Clone for AggregatingStateDescriptor<IN, ACC, OUT> {
    fn clone(&self) -> Self {
        AggregatingStateDescriptor {
            name: self.name.clone(),
            serializer: self.serializer.clone(),
            function: self.function.clone(),
            ttl: self.ttl.clone(),
            ttl_storage: self.ttl_storage.clone(),
            queryable: self.queryable.clone(),
        }
    }
}

impl<IN, ACC: Serialize + DeserializeOwned + 'static, OUT>
    AggregatingStateDescriptor<IN, ACC, OUT>
{
    /// A descriptor with the default serde serializer for the accumulator.
    pub fn new(name: impl Into<String>, function: impl AggregateFunction<IN, ACC, OUT>) -> Self {
        Self::with_serializer(name, Arc::new(function), SerdeSerializer::<ACC>::arc())
    }
}

impl<IN, ACC, OUT> AggregatingStateDescriptor<IN, ACC, OUT> {
    /// A descriptor with an explicit accumulator serializer.
    pub fn with_serializer(
        name: impl Into<String>,
        function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
        serializer: Arc<dyn TypeSerializer<ACC>>,
    ) -> Self {
        AggregatingStateDescriptor {
            name: name.into(),
            serializer,
            function,
            ttl: None,
            ttl_storage: None,
            queryable: None,
        }
    }
    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Exposes this state to queries under `name` (see the runtime's `query`
    /// module): a job's queryable names are unique; a state without one is never
    /// exposed.
    pub fn queryable(mut self, name: impl Into<String>) -> Self {
        self.queryable = Some(name.into());
        self
    }
    /// The name this state is queryable under, if it is.
    pub fn queryable_name(&self) -> Option<&str> {
        self.queryable.as_deref()
    }

    /// Gives the state a time to live (see [`crate::ttl`]). A config with
    /// [`crate::ttl::UpdateType::Disabled`] leaves the state without TTL.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// The TTL config, if any.
    pub fn ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref()
    }
    /// The TTL config when it is in effect (set and not disabled).
    pub fn enabled_ttl(&self) -> Option<&StateTtlConfig> {
        self.ttl.as_ref().filter(|t| t.is_enabled())
    }
    /// Marks this descriptor as the stored form of a TTL state (set by
    /// [`crate::ttl`]; backends read it to clean up in the background).
    pub fn with_ttl_storage(mut self, storage: TtlStorage<ACC>) -> Self {
        self.ttl_storage = Some(storage);
        self
    }
    /// How stored values carry their timestamps, for a state stored with TTL.
    pub fn ttl_storage(&self) -> Option<&TtlStorage<ACC>> {
        self.ttl_storage.as_ref()
    }
    /// The accumulator serializer.
    pub fn serializer(&self) -> &Arc<dyn TypeSerializer<ACC>> {
        &self.serializer
    }
    /// The aggregate function.
    pub fn function(&self) -> &Arc<dyn AggregateFunction<IN, ACC, OUT>> {
        &self.function
    }
}
