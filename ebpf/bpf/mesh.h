/* The layout the redirection programs share with the node agent.
 *
 * This header is the one definition. The agent's Rust mirror lives in
 * ebpf/src/layout.rs, and a test reads the compiled object's BTF to check
 * that both agree field by field. */
#ifndef MESH_H
#define MESH_H

#include <linux/types.h>

/* Settings the agent writes into the object's read-only data before it is
 * loaded. Marks are compared under mark_mask; addresses are in network
 * order, ports in host order. */
struct mesh_config {
	__u32 inpod_mark;      /* every socket ztunnel opens in the pod */
	__u32 redirect_mark;   /* routed to the pod's own stack (table 100) */
	__u32 mark_mask;
	__u32 probe_v4;        /* kubelet probes arrive from this address */
	__u8 probe_v6[16];
	__u16 outbound_port;   /* ztunnel's outbound listener (15001) */
	__u16 inbound_plaintext_port; /* ztunnel's plaintext inbound (15006) */
	__u16 hbone_port;      /* ztunnel's HBONE listener (15008), never captured */
	__u16 reserved;
};

/* Indexes of the per-CPU counters in the `mesh_stats` array. */
enum mesh_counter {
	MESH_OUTBOUND_CAPTURED = 0,  /* new outbound connections given to ztunnel */
	MESH_INBOUND_CAPTURED = 1,   /* new plaintext inbound connections given to ztunnel */
	MESH_EGRESS_REDIRECTED = 2,  /* packets turned back from egress into the pod */
	MESH_DROPPED_NO_LISTENER = 3, /* ztunnel not listening: dropped (fail closed) */
	MESH_DROPPED_ASSIGN = 4,     /* the kernel refused the socket: dropped */
	MESH_DROPPED_MALFORMED = 5,  /* TCP whose headers could not be read: dropped */
	MESH_TIME_WAIT_CLEARED = 6,  /* a SYN met an old TIME_WAIT socket: made to clear it */
	MESH_COUNTERS = 7,
};

/* A variable of the enum's type, so the enum reaches the object's BTF,
 * where the layout test reads it (each object is one translation unit). */
const volatile enum mesh_counter mesh_counters = MESH_COUNTERS;

#endif
