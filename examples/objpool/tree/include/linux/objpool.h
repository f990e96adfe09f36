/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Per-memcg object pools: a small, self-contained example in the shape of the
 * kmemcg cache code, used by the review bot's README and tests.
 */
#ifndef _LINUX_OBJPOOL_H
#define _LINUX_OBJPOOL_H

#include <linux/atomic.h>
#include <linux/list.h>
#include <linux/workqueue.h>

struct mem_cgroup;
struct objpool;

/**
 * struct objpool_memcg - per-memcg state of a child pool
 * @memcg: the memcg this pool is charged to
 * @list: entry in the memcg's list of pools
 * @pool: back pointer to the pool
 * @dead: set when the memcg goes offline; the pool may still have pages
 * @nr_pages: number of pages the pool holds
 * @destroy: work that destroys the pool once it is empty
 */
struct objpool_memcg {
	struct mem_cgroup *memcg;
	struct list_head list;
	struct objpool *pool;
	bool dead;
	atomic_t nr_pages;
	struct work_struct destroy;
};

struct objpool {
	const char *name;
	size_t object_size;
	struct objpool_memcg *memcg_params;
};

int objpool_init_memcg(struct objpool *pool, struct mem_cgroup *memcg);
void objpool_destroy(struct objpool *pool);
int objpool_shrink(struct objpool *pool);
void objpool_schedule_destroy(struct objpool *pool);

static inline bool objpool_is_root(struct objpool *pool)
{
	return !pool->memcg_params;
}

static inline void objpool_account_pages(struct objpool *pool, int order)
{
	if (!objpool_is_root(pool))
		atomic_add(1 << order, &pool->memcg_params->nr_pages);
}

static inline void objpool_release_pages(struct objpool *pool, int order)
{
	if (objpool_is_root(pool))
		return;

	if (atomic_sub_and_test(1 << order, &pool->memcg_params->nr_pages))
		objpool_schedule_destroy(pool);
}

#endif /* _LINUX_OBJPOOL_H */
