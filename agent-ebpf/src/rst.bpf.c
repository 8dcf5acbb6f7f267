// SPDX-License-Identifier: GPL-2.0
/* Answers TCP to a just-released VIP with RST, on the old owner's ingress (tc).
 *
 * Between this host dropping a VIP and the new owner's gratuitous ARP reaching the
 * clients, their packets for the VIP still arrive here (their ARP entry names our MAC).
 * The kernel drops them without a word (the address is no longer ours, ip_forward is off),
 * so a client's SYN waits for its 1 s retransmission and an open session hangs until a TCP
 * timeout. This program answers instead: a SYN gets RST+ACK (the client connects again at
 * once and reaches the new owner as soon as its ARP entry moved), a segment of an old
 * session gets RST (the client learns at once that its session is gone).
 *
 * Only VIPs in `released`, only TCP to mysql_port, only until the entry's deadline, and
 * only until shortly after an ARP from the new owner (sender address = the VIP) is seen:
 * RST_ARP_GRACE later nothing of ours answers for the VIP any more. The grace covers a SYN
 * a client sent in the instant before it processed the same broadcast: answered, it
 * reconnects at once to the new owner; dropped, it waited a whole connect timeout (1 in 6
 * SIGKILL runs did). Only clients whose ARP entry still names us reach us meanwhile.
 * Everything else passes. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "rst.h"

#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define IPPROTO_TCP 6
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7
#define ETH_HLEN 14
#define IP_HLEN 20
#define TCP_HLEN 20

/* Set by the agent at load time. */
const volatile __u32 mysql_port = 3306;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RST_MAX_VIPS);
	__type(key, struct rst_key);
	__type(value, struct rst_value);
} released SEC(".maps");

/* ARP payload for IPv4 over Ethernet. */
struct arp_eth {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

/* A new owner announced the VIP: stop answering for it RST_ARP_GRACE from now (the
 * first of its ARPs counts; later ones never extend it). */
static __always_inline int on_arp(void *data, void *data_end)
{
	struct arp_eth *arp = data + ETH_HLEN;
	struct rst_key key = {};
	struct rst_value *until;
	__u64 end;

	if ((void *)(arp + 1) > data_end)
		return TC_ACT_OK;
	if (arp->ptype != bpf_htons(ETH_P_IP) || arp->plen != 4)
		return TC_ACT_OK;
	__builtin_memcpy(&key.addr, arp->spa, 4);
	until = bpf_map_lookup_elem(&released, &key);
	if (!until)
		return TC_ACT_OK;
	end = bpf_ktime_get_ns() + RST_ARP_GRACE_NS;
	if (until->until_ns > end)
		until->until_ns = end;
	return TC_ACT_OK;
}

SEC("classifier")
int rst_released(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct rst_key key = {};
	struct rst_value *until;
	__u8 mac[6];
	__be32 addr;
	__be16 port;
	__u32 seq, ack_seq, payload;
	int syn, has_ack;
	__u64 sum;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return on_arp(data, data_end);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_OK;
	/* Options or fragments: not a client's plain segment; leave it to the kernel. */
	if (ip->ihl != 5 || ip->protocol != IPPROTO_TCP || (ip->frag_off & bpf_htons(0x3fff)))
		return TC_ACT_OK;
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end)
		return TC_ACT_OK;
	if (tcp->dest != bpf_htons((__u16)mysql_port))
		return TC_ACT_OK;
	key.addr = ip->daddr;
	until = bpf_map_lookup_elem(&released, &key);
	if (!until)
		return TC_ACT_OK;
	if (bpf_ktime_get_ns() > until->until_ns) {
		bpf_map_delete_elem(&released, &key);
		return TC_ACT_OK;
	}
	/* Never answer a RST (RFC 793), and never answer what is not ours to end. */
	if (tcp->rst)
		return TC_ACT_SHOT;

	syn = tcp->syn;
	has_ack = tcp->ack;
	seq = bpf_ntohl(tcp->seq);
	ack_seq = bpf_ntohl(tcp->ack_seq);
	payload = bpf_ntohs(ip->tot_len) - IP_HLEN - tcp->doff * 4;

	/* Drop TCP options and payload: the reply is Ethernet + 20 + 20 bytes. */
	if (bpf_skb_change_tail(skb, ETH_HLEN + IP_HLEN + TCP_HLEN, 0))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end)
		return TC_ACT_SHOT;

	__builtin_memcpy(mac, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, eth->h_dest, 6);
	__builtin_memcpy(eth->h_dest, mac, 6);

	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tot_len = bpf_htons(IP_HLEN + TCP_HLEN);
	ip->ttl = 64;
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); /* DF */
	ip->check = 0;
	ip->check = fold(bpf_csum_diff(0, 0, (__be32 *)ip, IP_HLEN, 0));

	port = tcp->source;
	tcp->source = tcp->dest;
	tcp->dest = port;
	/* RFC 793 reset generation. */
	if (has_ack) {
		tcp->seq = bpf_htonl(ack_seq);
		tcp->ack_seq = 0;
		tcp->ack = 0;
	} else {
		tcp->seq = 0;
		tcp->ack_seq = bpf_htonl(seq + payload + (syn ? 1 : 0));
		tcp->ack = 1;
	}
	tcp->rst = 1;
	tcp->syn = 0;
	tcp->fin = 0;
	tcp->psh = 0;
	tcp->urg = 0;
	tcp->ece = 0;
	tcp->cwr = 0;
	tcp->doff = TCP_HLEN / 4;
	tcp->window = 0;
	tcp->urg_ptr = 0;
	tcp->check = 0;
	/* Pseudo header: addresses, protocol, TCP length. */
	sum = (__u64)(ip->saddr >> 16) + (ip->saddr & 0xffff) + (ip->daddr >> 16) +
	      (ip->daddr & 0xffff) + bpf_htons(IPPROTO_TCP) + bpf_htons(TCP_HLEN);
	sum = bpf_csum_diff(0, 0, (__be32 *)tcp, TCP_HLEN, sum);
	tcp->check = fold(sum);

	return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
