/*
 * vrouter pmd-shim: exported wrappers for DPDK's static-inline functions and per-lcore
 * variables, which bindgen cannot bind. Every function is a thin forwarder; the safety
 * contracts are DPDK's own and are restated at the Rust call sites.
 */
#ifndef VR_PMD_SHIM_H
#define VR_PMD_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_dev.h>
#include <rte_bus_vdev.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_cycles.h>

/* Limits and flags that DPDK defines as computed macros, which bindgen does not evaluate. */
enum vr_consts {
	VR_MEMPOOL_NAMESIZE = RTE_MEMPOOL_NAMESIZE,
	VR_RING_NAMESIZE = RTE_RING_NAMESIZE,
	VR_RING_F_SP_ENQ = RING_F_SP_ENQ,
	VR_RING_F_SC_DEQ = RING_F_SC_DEQ,
	VR_TX_OFFLOAD_MULTI_SEGS = RTE_ETH_TX_OFFLOAD_MULTI_SEGS,
	VR_TX_OFFLOAD_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM,
	VR_TX_OFFLOAD_TCP_CKSUM = RTE_ETH_TX_OFFLOAD_TCP_CKSUM,
	VR_TX_OFFLOAD_UDP_CKSUM = RTE_ETH_TX_OFFLOAD_UDP_CKSUM,
	VR_TX_OFFLOAD_TCP_TSO = RTE_ETH_TX_OFFLOAD_TCP_TSO,
	VR_TX_OFFLOAD_UDP_TSO = RTE_ETH_TX_OFFLOAD_UDP_TSO,
	VR_TX_OFFLOAD_OUTER_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_OUTER_IPV4_CKSUM,
	VR_TX_OFFLOAD_VXLAN_TNL_TSO = RTE_ETH_TX_OFFLOAD_VXLAN_TNL_TSO,
	VR_TX_OFFLOAD_GRE_TNL_TSO = RTE_ETH_TX_OFFLOAD_GRE_TNL_TSO,
	VR_TX_OFFLOAD_UDP_TNL_TSO = RTE_ETH_TX_OFFLOAD_UDP_TNL_TSO,
};

int vr_errno(void);
unsigned vr_lcore_id(void);

uint16_t vr_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t vr_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
/* rte_eth_tx_prepare: fixes up what the device needs for the offloads asked (pseudo-header
 * checksums and the like); returns how many from the front are ready. */
uint16_t vr_eth_tx_prepare(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *vr_pktmbuf_alloc(struct rte_mempool *mp);
int vr_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void vr_pktmbuf_free(struct rte_mbuf *m);
char *vr_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *vr_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *vr_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int vr_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t vr_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t vr_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t vr_pktmbuf_data_room_size(struct rte_mempool *mp);
int vr_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);
/* Frees every segment after the first, then resets the first to an empty packet. */
void vr_pktmbuf_reset_to_empty(struct rte_mbuf *m);

/*
 * Registers the mbuf dynamic field that carries vrouter's offload word (8 bytes) and the
 * ol_flags bit saying it is valid; idempotent. On success stores the field's byte offset and
 * the flag's bit number and returns 0; otherwise returns -rte_errno.
 */
int vr_offload_register(int *field_offset, int *flag_bit);
/* Keeps the first `len` bytes of the packet (len <= the first segment's data_len), freeing every
 * further segment. Returns 0, or -1 (nothing changed) when len is too long. */
int vr_pktmbuf_truncate(struct rte_mbuf *m, uint16_t len);
/* Asks the device to finish checksums / segmentation of `m` (DPDK's TX offload request):
 * ol_flags bits RTE_MBUF_F_TX_* are set (added), and the header lengths and TSO segment size. */
void vr_mbuf_set_tx_offload(struct rte_mbuf *m, uint64_t ol_flags, uint16_t l2_len,
			    uint16_t l3_len, uint16_t l4_len, uint16_t tso_segsz,
			    uint16_t outer_l2_len, uint16_t outer_l3_len);
/* Allocates an empty segment from the pool `m` came from (NULL if it is empty). */
struct rte_mbuf *vr_pktmbuf_alloc_like(const struct rte_mbuf *m);

/* Field accessors that live in anonymous unions, so their Rust names would be unstable. */
uint32_t vr_mbuf_rss_hash(const struct rte_mbuf *m);
int vr_mbuf_has_rss_hash(const struct rte_mbuf *m);
struct rte_mbuf *vr_mbuf_next(const struct rte_mbuf *m);

unsigned vr_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned vr_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned vr_ring_count(const struct rte_ring *r);
unsigned vr_ring_free_count(const struct rte_ring *r);

uint64_t vr_rdtsc(void);

/* What a port was configured with (filled in whether configuration succeeded or not). */
struct vr_eth_setup {
	uint32_t max_rx_frame;  /* the largest frame the device receives */
	uint16_t max_mtu;       /* the largest MTU it accepts */
	int scatter;            /* received frames span several mbufs */
	uint64_t tx_offloads;   /* RTE_ETH_TX_OFFLOAD_* enabled */
};

/*
 * Configures a port with nrx/ntx queues. With want_rss and more than one RX queue, RSS is
 * enabled over IP/UDP/TCP (restricted to what the device supports) and the RSS hash is
 * delivered in mbufs when the device can. With mtu != 0 the device gets that MTU; frames
 * longer than rx_buf_room (data bytes per RX mbuf) are received scattered over several mbufs,
 * or the call fails with -ENOBUFS when the device cannot scatter (bigger buffers needed), and
 * with -EMSGSIZE when the MTU exceeds the device's. Multi-segment transmit is enabled where
 * the device has it, and with want_tx_offloads its checksum, TSO and tunnel TSO offloads.
 * Returns 0 or a negative errno.
 */
int vr_eth_configure(uint16_t port, uint16_t nrx, uint16_t ntx, int want_rss, uint16_t mtu,
		     uint16_t rx_buf_room, int want_tx_offloads, struct vr_eth_setup *out);
/* Link state without waiting: 0 on success, negative errno otherwise. */
int vr_eth_link(uint16_t port, uint32_t *speed_mbps, int *up, int *full_duplex);

#endif
