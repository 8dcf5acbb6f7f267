/* Shared between the BPF programs and the agent (mirrored by ProbeEventRaw in
 * agent/src/probe.rs, with compile-time size and offset checks). */
#ifndef MMM_PROBE_H
#define MMM_PROBE_H

/* What happened to the watched mysqld. */
#define PROBE_PROCESS_EXIT 1 /* its whole thread group exited */
#define PROBE_LISTEN_CLOSE 2 /* its listening socket on mysql_port closed */
#define PROBE_LISTEN_OPEN 3  /* mysqld started listening on mysql_port */

/* mysqld_uid when the agent could not learn it: any uid may name mysqld. */
#define PROBE_ANY_UID 0xffffffffu

struct probe_event {
	__u64 ktime_ns; /* bpf_ktime_get_ns() when it happened */
	__u32 tgid;     /* mysqld's process id */
	__u16 kind;     /* PROBE_* */
	__u16 port;     /* mysql_port, host order */
};

#endif
