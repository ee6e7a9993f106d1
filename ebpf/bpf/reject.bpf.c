/* An object the kernel's verifier must refuse, with the same programs,
 * settings and map as redirect.bpf.c. Tests load it (cni-agent
 * --ebpf-object) to show that a program that cannot be loaded makes
 * enrollment fail with a clear error instead of capturing nothing. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "mesh.h"

volatile const struct mesh_config CONFIG = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} mesh_stats SEC(".maps");

SEC("classifier")
int mesh_egress(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("classifier")
int mesh_ingress(struct __sk_buff *skb)
{
	/* A packet byte read without checking it exists. */
	__u8 *data = (__u8 *)(long)skb->data;
	return data[64];
}

char _license[] SEC("license") = "Apache-2.0";
