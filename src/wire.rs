//! The daemoneye-eventbus wire codec (design brief §6): frames, the postcard envelope, the
//! process payload, health frames, topics and our hello/welcome/ack extension. Pure: no I/O.
