//! The dispatch core without sockets: inputs in, actions out.
