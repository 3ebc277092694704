#include <string.h>

#include "shim.h"

int vr_errno(void) { return rte_errno; }
unsigned vr_lcore_id(void) { return rte_lcore_id(); }

uint16_t vr_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t vr_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

uint16_t vr_eth_tx_prepare(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_prepare(port, queue, pkts, n);
}

struct rte_mbuf *vr_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int vr_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void vr_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *vr_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *vr_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *vr_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int vr_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t vr_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t vr_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint16_t vr_pktmbuf_data_room_size(struct rte_mempool *mp) { return rte_pktmbuf_data_room_size(mp); }
int vr_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail) { return rte_pktmbuf_chain(head, tail); }

void vr_pktmbuf_reset_to_empty(struct rte_mbuf *m)
{
	if (m->next != NULL) {
		rte_pktmbuf_free(m->next);
		m->next = NULL;
	}
	rte_pktmbuf_reset(m);
}

int vr_offload_register(int *field_offset, int *flag_bit)
{
	static const struct rte_mbuf_dynfield field = {
		.name = "vrouter_offload",
		.size = sizeof(uint64_t),
		.align = __alignof__(uint64_t),
	};
	static const struct rte_mbuf_dynflag flag = {
		.name = "vrouter_offload_valid",
	};
	int off = rte_mbuf_dynfield_register(&field);
	if (off < 0)
		return -rte_errno;
	int bit = rte_mbuf_dynflag_register(&flag);
	if (bit < 0)
		return -rte_errno;
	*field_offset = off;
	*flag_bit = bit;
	return 0;
}

struct rte_mbuf *vr_pktmbuf_alloc_like(const struct rte_mbuf *m) { return rte_pktmbuf_alloc(m->pool); }

void vr_mbuf_set_tx_offload(struct rte_mbuf *m, uint64_t ol_flags, uint16_t l2_len,
			    uint16_t l3_len, uint16_t l4_len, uint16_t tso_segsz,
			    uint16_t outer_l2_len, uint16_t outer_l3_len)
{
	m->ol_flags |= ol_flags;
	m->l2_len = l2_len;
	m->l3_len = l3_len;
	m->l4_len = l4_len;
	m->tso_segsz = tso_segsz;
	m->outer_l2_len = outer_l2_len;
	m->outer_l3_len = outer_l3_len;
}

int vr_pktmbuf_truncate(struct rte_mbuf *m, uint16_t len)
{
	if (len > m->data_len)
		return -1;
	if (m->next != NULL) {
		rte_pktmbuf_free(m->next);
		m->next = NULL;
	}
	m->nb_segs = 1;
	m->data_len = len;
	m->pkt_len = len;
	return 0;
}

uint32_t vr_mbuf_rss_hash(const struct rte_mbuf *m) { return m->hash.rss; }
int vr_mbuf_has_rss_hash(const struct rte_mbuf *m) { return (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) != 0; }
struct rte_mbuf *vr_mbuf_next(const struct rte_mbuf *m) { return m->next; }

unsigned vr_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned vr_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned vr_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned vr_ring_free_count(const struct rte_ring *r) { return rte_ring_free_count(r); }

uint64_t vr_rdtsc(void) { return rte_rdtsc(); }

int vr_eth_configure(uint16_t port, uint16_t nrx, uint16_t ntx, int want_rss, uint16_t mtu,
		     uint16_t rx_buf_room, int want_tx_offloads, struct vr_eth_setup *out)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	int ret;

	memset(&conf, 0, sizeof(conf));
	memset(out, 0, sizeof(*out));
	ret = rte_eth_dev_info_get(port, &info);
	if (ret != 0)
		return ret;
	out->max_rx_frame = info.max_rx_pktlen;
	out->max_mtu = info.max_mtu;
	if (mtu != 0) {
		/* The frame around the MTU as ethdev counts it (header and CRC); a buffer also
		 * makes room for one 802.1Q tag. */
		uint32_t frame = (uint32_t)mtu + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN;
		if (mtu > info.max_mtu || frame > info.max_rx_pktlen)
			return -EMSGSIZE;
		if (frame + 4 > rx_buf_room) {
			if (!(info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_SCATTER))
				return -ENOBUFS;
			conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_SCATTER;
			out->scatter = 1;
		}
		conf.rxmode.mtu = mtu;
	}
	conf.txmode.offloads = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
	if (want_tx_offloads)
		conf.txmode.offloads |= info.tx_offload_capa &
			(RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM |
			 RTE_ETH_TX_OFFLOAD_UDP_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_TSO |
			 RTE_ETH_TX_OFFLOAD_UDP_TSO | RTE_ETH_TX_OFFLOAD_OUTER_IPV4_CKSUM |
			 RTE_ETH_TX_OFFLOAD_VXLAN_TNL_TSO | RTE_ETH_TX_OFFLOAD_GRE_TNL_TSO |
			 RTE_ETH_TX_OFFLOAD_UDP_TNL_TSO);
	out->tx_offloads = conf.txmode.offloads;
	if (want_rss && nrx > 1) {
		uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP | RTE_ETH_RSS_TCP) &
			      info.flow_type_rss_offloads;
		if (hf != 0) {
			conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
			conf.rx_adv_conf.rss_conf.rss_hf = hf;
		}
	}
	if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_RSS_HASH)
		conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_RSS_HASH;
	return rte_eth_dev_configure(port, nrx, ntx, &conf);
}

int vr_eth_link(uint16_t port, uint32_t *speed_mbps, int *up, int *full_duplex)
{
	struct rte_eth_link link;
	int ret;

	memset(&link, 0, sizeof(link));
	ret = rte_eth_link_get_nowait(port, &link);
	if (ret != 0)
		return ret;
	*speed_mbps = link.link_speed;
	*up = link.link_status == RTE_ETH_LINK_UP;
	*full_duplex = link.link_duplex == RTE_ETH_LINK_FULL_DUPLEX;
	return 0;
}
