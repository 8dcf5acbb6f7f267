/* Shared between the tc program (src/rst.bpf.c) and the agent (agent/src/rst.rs, with
 * compile-time size and offset checks of its mirror). */
#ifndef MMM_RST_H
#define MMM_RST_H

/* Key of the `released` map: a VIP this host gave up, network byte order. */
struct rst_key {
	__u32 addr;
};

/* Value: until when (bpf_ktime_get_ns, CLOCK_MONOTONIC) TCP to that VIP is answered with
 * RST, unless the new owner's ARP arrives first. */
struct rst_value {
	__u64 until_ns;
};

/* How long the old owner still answers after the new owner's ARP: clients that process
 * the same broadcast a moment later are covered. */
#define RST_ARP_GRACE_NS (100ULL * 1000 * 1000)

/* Released VIPs tracked at once (a host holds a handful of VIPs). */
#define RST_MAX_VIPS 64

#endif
