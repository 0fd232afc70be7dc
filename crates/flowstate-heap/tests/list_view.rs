//! `ListState::view` on the heap backend: it lends the stored list, and a write to the
//! same state from inside the view is refused with an error, leaving the list as it
//! was, instead of panicking on the borrowed table.
#![allow(clippy::unwrap_used)] // tests: a failed expectation is a failure

use flowstate_conformance::config;
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::ListStateDescriptor;
use flowstate_core::error::StateError;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::state::VoidNamespace;
use flowstate_heap::HeapKeyedStateBackend;

#[test]
fn a_write_from_inside_a_view_is_refused_and_changes_nothing() {
    let range = KeyGroupRange::all(128).unwrap();
    let backend = HeapKeyedStateBackend::new(config::<u64>(128, range)).unwrap();
    let list = backend
        .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("l"))
        .unwrap();
    backend.set_current_key(7).unwrap();
    list.add(1).unwrap();
    list.add(2).unwrap();

    let mut seen = Vec::new();
    let mut inner = None;
    list.view(&mut |items| {
        seen = items.to_vec();
        inner = Some(list.add(3));
    })
    .unwrap();
    assert_eq!(seen, vec![1, 2]);
    assert!(
        matches!(inner, Some(Err(StateError::Lent { ref state })) if state == "l"),
        "{inner:?}"
    );
    assert_eq!(list.get().unwrap(), vec![1, 2]);
    // After the view the state takes writes again; an absent list is lent as empty.
    list.add(3).unwrap();
    assert_eq!(list.get().unwrap(), vec![1, 2, 3]);
    backend.set_current_key(8).unwrap();
    let mut empty = None;
    list.view(&mut |items| empty = Some(items.len())).unwrap();
    assert_eq!(empty, Some(0));
}
